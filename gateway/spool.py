"""Where an uploaded instance waits, encrypted, until its whole request has arrived.

STOW-RS answers 400, 413 or 415 "before anything is stored", so no part of a request may
reach ingest before its last byte has arrived and every part has been checked: the parts
must wait somewhere. Memory would hold a CT series (up to ``portal.max_body_mb``) per
request; a plain temporary file would put patients' images on disk in clear, which nothing
else in ztbridge ever does. So every part of a request is sealed chunk by chunk (envelope
v2, ``gateway.crypto.seal``; 1 MiB chunks, and each part's last one when it ends) under a
key that exists only in the request's ``SpoolFile``, into one unnamed file in the gateway's
home (``O_TMPFILE``: no name to find, gone with the process). A request holds at most one
chunk in memory while it arrives, however many parts it has. Reading a part back opens each
chunk and checks its tag and its number; a chunk changed or moved on disk does not open.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from gateway import crypto
from gateway.errors import InvalidEnvelopeError, StorageError

CHUNK = 1 << 20  # plaintext bytes per sealed chunk
_LEN = struct.Struct(">Q")


class SpoolFile:
    """One request's parts, sealed chunk by chunk into one unnamed file (one descriptor per
    request, however many parts) under a key that exists only in this object."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._key = crypto.new_data_key()
        self._key_id = crypto.new_key_id()
        self._file: BinaryIO | None = None
        self._end = 0
        self._chunks = 0

    def part(self) -> Spool:
        """A new part, appended after the others."""
        return Spool(self)

    def _append(self, plain: bytes | bytearray | memoryview) -> tuple[int, int, int]:
        """Seal ``plain`` at the end of the file: (offset, length, chunk number)."""
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115 - kept open
            except OSError as e:
                raise StorageError(f"cannot spool an upload in {self._folder}: {e}") from e
        number = self._chunks
        # The chunk's number is sealed with it: chunks cannot be swapped or dropped unseen.
        sealed = crypto.seal(self._key, self._key_id, _LEN.pack(number) + bytes(plain))
        try:
            self._file.seek(self._end)
            self._file.write(sealed)
        except OSError as e:
            raise StorageError(f"cannot spool an upload in {self._folder}: {e}") from e
        offset, self._end = self._end, self._end + len(sealed)
        self._chunks += 1
        return offset, len(sealed), number

    def _open(self, offset: int, length: int, number: int) -> bytes:
        assert self._file is not None
        self._file.seek(offset)
        try:
            plain = crypto.open_sealed(self._key, self._file.read(length))
        except InvalidEnvelopeError as e:
            raise StorageError("a spooled upload was changed on disk") from e
        if _LEN.unpack(plain[: _LEN.size])[0] != number:
            raise StorageError("a spooled upload was changed on disk")
        return plain[_LEN.size :]

    def close(self) -> None:
        """Forget every part: the file goes (it never had a name) and the key with it."""
        if self._file is not None:
            self._file.close()
            self._file = None


class Spool:
    """One part's bytes: appended as they arrive, sealed a chunk at a time and at its end
    (``finish``), so a request holds at most one chunk in memory, however many parts."""

    def __init__(self, owner: SpoolFile) -> None:
        self._owner = owner
        self._buffer = bytearray()
        self._chunks: list[tuple[int, int, int]] = []
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; every full chunk is sealed and written out."""
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= CHUNK:
            self._chunks.append(self._owner._append(memoryview(self._buffer)[:CHUNK]))
            del self._buffer[:CHUNK]

    def finish(self) -> None:
        """The part is complete: what is left in memory goes to the file too."""
        if self._buffer:
            self._chunks.append(self._owner._append(self._buffer))
            self._buffer = bytearray()

    def read(self) -> bytes:
        """The whole part, each chunk opened and checked (one instance in memory, as a
        C-STORE holds one)."""
        out = bytearray()
        for offset, length, number in self._chunks:
            out += self._owner._open(offset, length, number)
        out += self._buffer
        return bytes(out)
