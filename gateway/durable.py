"""Durable files: the one place that fsyncs a directory, and the one writer of new files.

Why: POSIX makes a file's contents durable with fsync on the file, but its *name* (a create,
rename, link or unlink) only with fsync on the folder that holds it. The store, the ledger's
journal and snapshot, the key files and the PKI all need that step after writing.

``create_file`` / ``write_new_file`` are the only way key, certificate, account and posture
key files are written (they were three writers with three different guarantees): owner-only,
never over an existing file, whole or not at all, and durable with their name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from gateway.errors import InvalidInputError

# link(2) errors meaning "this filesystem has no hard links", not "the name exists".
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


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


def create_file(path: Path, data: bytes, *, mode: int = 0o600) -> bool:
    """Create ``path`` with ``data``, whole and durably, unless it exists; False if it did.

    The one writer for key, certificate and enrollment files: owner-only (``mode``), never
    over an existing file, and never half-written. The data goes to a unique temporary file
    beside it (fsynced), which is then hard-linked into place: ``link`` fails if the name
    exists, so two processes creating the same key at once can never both believe theirs
    won, and a crash leaves either no file or the whole one. The folder is fsynced so the new
    name survives a crash too. On a filesystem without hard links (a FAT stick for ``ca
    export``) it falls back to ``O_EXCL``, which still never overwrites.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    _write_exclusive(tmp, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in _NO_LINKS:
            raise
        try:
            _write_exclusive(path, data, mode)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder_best_effort(path.parent)
    return True


def write_new_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """As ``create_file``, refusing (InvalidInputError naming the file) if it exists.

    Why refuse: a certificate or key written over another is a silent revocation (or worse, a
    key mix-up) on whatever modality used the old one.
    """
    try:
        created = create_file(path, data, mode=mode)
    except OSError as e:
        raise InvalidInputError(f"cannot write {path}: {e.strerror}") from e
    if not created:
        raise InvalidInputError(f"{path} already exists: move it away or choose another name")


T = TypeVar("T")


def create_streamed(path: Path, fill: Callable[[BinaryIO], T], *, mode: int = 0o600) -> T:
    """Create ``path`` from what ``fill`` writes to it, never over an existing file.

    For files too large to hold (exported instances, CAR files): ``fill`` writes to a unique
    temporary file beside ``path``, which is fsynced and then hard-linked into place, so an
    existing name (even one that appears meanwhile) is never replaced, and a failure part-way
    (``fill`` raising) leaves no file. FileExistsError if ``path`` exists.
    """
    if path.exists() or path.is_symlink():
        raise FileExistsError(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            result = fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder_best_effort(path.parent)
    return result


def replace_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``data`` (for files that are renewed on purpose, like
    the server certificate): a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_exclusive(tmp, data, mode)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder_best_effort(path.parent)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
