"""One process at a time sends transactions from a data folder's accounts.

Why a lock file: two processes signing with the same sender key would pick the same nonces,
and two processes appending to one embedded chain journal would fork it. ``ztbridge up``'s
anchoring worker, ``ztbridge chain deploy`` and ``ztbridge chain drain`` all take it; readers
(``chain info``, ``verify``) never need it. The kernel releases it when its holder dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gateway.errors import StorageError


class LedgerLock:
    """An exclusive, non-blocking ``flock`` on ``$ZTBRIDGE_HOME/ledger/LOCK``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock if free; False if another process holds it."""
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StorageError(f"cannot open the ledger lock {self.path}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid written by the current holder, for messages ("" if unknown)."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def release(self) -> None:
        """Give the lock up."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
