"""Append-only journal of mined transactions: how the embedded chain survives a restart.

Why a journal of signed raw transactions rather than a state dump: the chain is rebuilt by
re-executing exactly what was mined, with each block's timestamp pinned, so block hashes,
receipts, events and balances come back bit-identical and the recorded block hash of every
entry verifies the replay. Format: a magic line, then entries ``len:u32 | crc32:u32 | payload``
with payload ``timestamp:u64 | block_hash:32 | raw_tx``; each entry is fsync'd once mined. A
torn last entry (crash mid-write) is cut off at open; damage anywhere else is refused.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.durable import fsync_folder
from gateway.ledger.errors import LedgerConfigError

MAGIC = b"ZTBRIDGE-LEDGER-JOURNAL v1\n"
_HEAD = struct.Struct(">II")
_FIXED = struct.Struct(">Q32s")


@dataclass(frozen=True)
class JournalEntry:
    """One mined transaction: the block timestamp used, the resulting block hash, the tx."""

    timestamp: int
    block_hash: bytes
    raw_tx: bytes


class Journal:
    """The journal file, opened for replay then append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def read(self, *, truncate: bool = True) -> Iterator[JournalEntry]:
        """Every complete entry, in order; truncates a torn tail (unless ``truncate`` is False).

        A reader in another process (``ztbridge chain info`` while ``ztbridge up`` runs) must
        pass ``truncate=False``: the "torn" tail it sees may be an entry being written.
        """
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data.startswith(MAGIC):
            raise LedgerConfigError(f"{self.path} is not a ztbridge ledger journal")
        offset = len(MAGIC)
        while offset < len(data):
            if offset + _HEAD.size > len(data):
                break  # torn header
            length, crc = _HEAD.unpack_from(data, offset)
            end = offset + _HEAD.size + length
            if end > len(data):
                break  # torn payload
            payload = data[offset + _HEAD.size : end]
            if zlib.crc32(payload) != crc or length < _FIXED.size:
                raise LedgerConfigError(f"{self.path}: corrupt entry at byte {offset}")
            timestamp, block_hash = _FIXED.unpack_from(payload)
            yield JournalEntry(timestamp, block_hash, payload[_FIXED.size :])
            offset = end
        if offset < len(data) and truncate:
            with self.path.open("r+b") as fh:
                fh.truncate(offset)
                fh.flush()
                os.fsync(fh.fileno())

    def append(self, entry: JournalEntry) -> None:
        """Write one entry and fsync it before returning."""
        fh = self._open()
        payload = _FIXED.pack(entry.timestamp, entry.block_hash) + entry.raw_tx
        fh.write(_HEAD.pack(len(payload), zlib.crc32(payload)) + payload)
        fh.flush()
        os.fsync(fh.fileno())

    def _open(self) -> BinaryIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._fh = self.path.open("ab")
            if new:
                self._fh.write(MAGIC)
                self._fh.flush()
                os.fsync(self._fh.fileno())
                fsync_folder(self.path.parent)
        return self._fh

    def close(self) -> None:
        """Close the file (entries are already durable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
