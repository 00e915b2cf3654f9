"""Snapshots of the embedded chain's database: how a restart avoids replaying every block.

Why: replaying the journal re-executes every transaction, about 17 ms each on a 2-core
machine. A gateway that anchors a thousand studies and audit ranges a day would take minutes
to start after a month and hours after a year, and ``chain info`` and ``verify`` (which open
a replayed copy) with it. A snapshot is the chain's whole key-value database at one block,
written beside the journal every so many blocks and at a clean close; at start it is loaded
and only the journal's entries after it are replayed.

The journal stays the record. A snapshot is used only if its checksum holds and the head
block hash it names is the one the journal recorded for that height; otherwise the journal
is replayed in full, with a warning.

Format: ``MAGIC``, then ``height:u64 | head_hash:32 | pairs:u64``, then per pair
``key_len:u32 | key | value_len:u32 | value``, then the SHA-256 of everything before it.
Written to a temporary file, fsync'd, renamed over the old one, and the folder fsync'd: a
reader (another process, or a crash) sees the old snapshot or the new one, never half.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.durable import fsync_folder
from gateway.ledger.errors import LedgerConfigError

MAGIC = b"ZTBRIDGE-LEDGER-SNAPSHOT v1\n"
_HEAD = struct.Struct(">Q32sQ")
_LEN = struct.Struct(">I")
_DIGEST = 32


@dataclass(frozen=True)
class Snapshot:
    """The chain database after block ``height`` (whose hash is ``head_hash``)."""

    height: int
    head_hash: bytes
    kv: dict[bytes, bytes]


def write_snapshot(path: Path, height: int, head_hash: bytes, kv: Mapping[bytes, bytes]) -> int:
    """Write the snapshot atomically (see the module doc); returns its size in bytes."""
    tmp = path.with_name(path.name + ".tmp")
    digest = hashlib.sha256()
    size = 0
    with tmp.open("wb") as fh:

        def out(data: bytes) -> None:
            nonlocal size
            digest.update(data)
            fh.write(data)
            size += len(data)

        out(MAGIC + _HEAD.pack(height, head_hash, len(kv)))
        pack = _LEN.pack
        for key, value in kv.items():
            out(b"".join((pack(len(key)), key, pack(len(value)), value)))
        fh.write(digest.digest())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_folder(path.parent)
    return size + _DIGEST


def read_snapshot(path: Path) -> Snapshot | None:
    """The snapshot at ``path``; None if there is none. Damage raises LedgerConfigError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LedgerConfigError(f"cannot read the chain snapshot {path}: {e}") from e
    end = len(data) - _DIGEST  # no slice of the body: it is most of the file
    if not data.startswith(MAGIC) or end < len(MAGIC) + _HEAD.size:
        raise LedgerConfigError(f"{path} is not a ztbridge chain snapshot")
    view = memoryview(data)
    if hashlib.sha256(view[:end]).digest() != data[end:]:
        raise LedgerConfigError(f"{path}: checksum mismatch (damaged or cut short)")
    height, head_hash, pairs = _HEAD.unpack_from(data, len(MAGIC))
    offset = len(MAGIC) + _HEAD.size
    kv: dict[bytes, bytes] = {}
    body = view[:end]  # a pair running into the checksum is malformed, not read from it
    try:
        for _ in range(pairs):
            (n,) = _LEN.unpack_from(body, offset)
            key = bytes(body[offset + 4 : offset + 4 + n])
            offset += 4 + n
            (n,) = _LEN.unpack_from(body, offset)
            kv[key] = bytes(body[offset + 4 : offset + 4 + n])
            offset += 4 + n
    except struct.error as e:
        raise LedgerConfigError(f"{path}: malformed pair at byte {offset}") from e
    if offset != end:
        raise LedgerConfigError(f"{path}: {end - offset} bytes after the last pair")
    return Snapshot(height, head_hash, kv)
