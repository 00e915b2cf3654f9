"""Making a new name in a folder durable: the one place that fsyncs a directory.

Why: POSIX makes a file's contents durable with fsync on the file, but its *name* (a create,
rename, link or unlink) only with fsync on the folder that holds it. The store, the ledger's
journal and snapshot, the key files and the PKI all need that step after writing.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_folder(folder: Path) -> None:
    """fsync ``folder`` so the names created, renamed or removed in it survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder_best_effort(folder: Path) -> None:
    """As ``fsync_folder``, for callers on filesystems that may not allow it (errors ignored)."""
    with contextlib.suppress(OSError):
        fsync_folder(folder)
