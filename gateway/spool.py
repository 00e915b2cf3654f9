"""Where an uploaded instance waits, encrypted, until its whole request has arrived.

STOW-RS answers 400, 413 or 415 "before anything is stored", so no part of a request may
reach ingest before its last byte has arrived and every part has been checked: the parts
must wait somewhere. Memory would hold a CT series (up to ``portal.max_body_mb``) per
request; a plain temporary file would put patients' images on disk in clear, which nothing
else in ztbridge ever does. So a part is kept in memory up to one chunk, and beyond that
sealed chunk by chunk (envelope v2, ``gateway.crypto.seal``) under a key that exists only in
this object, into an unnamed file in the gateway's home (``O_TMPFILE``: no name to find, gone
with the process). Reading it back opens each chunk and checks its tag; a chunk whose index
or length was changed on disk does not open.
"""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path
from typing import BinaryIO

from gateway import crypto
from gateway.errors import InvalidEnvelopeError, StorageError

CHUNK = 1 << 20  # plaintext bytes per sealed chunk; a smaller part never touches the disk
_LEN = struct.Struct(">Q")


class Spool:
    """One part's bytes: appended as they arrive, read back whole once (for ingest)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._key = crypto.new_data_key()
        self._key_id = crypto.new_key_id()
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._chunks = 0
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        """Append ``data``; every full chunk is sealed and written out."""
        self._buffer += data
        self.size += len(data)
        while len(self._buffer) >= CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]))
            del self._buffer[:CHUNK]

    def _seal(self, plain: bytes) -> None:
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115 - kept open
            except OSError as e:
                raise StorageError(f"cannot spool an upload in {self._folder}: {e}") from e
        # The chunk's index is sealed with it: chunks cannot be swapped or dropped unseen.
        sealed = crypto.seal(self._key, self._key_id, _LEN.pack(self._chunks) + plain)
        try:
            self._file.write(_LEN.pack(len(sealed)) + sealed)
        except OSError as e:
            raise StorageError(f"cannot spool an upload in {self._folder}: {e}") from e
        self._chunks += 1

    def read(self) -> bytes:
        """The whole part, each chunk opened and checked (one instance in memory, as a
        C-STORE holds one)."""
        out = bytearray()
        if self._file is not None:
            self._file.seek(0)
            for index in range(self._chunks):
                head = self._file.read(_LEN.size)
                sealed = self._file.read(_LEN.unpack(head)[0]) if len(head) == _LEN.size else b""
                try:
                    plain = crypto.open_sealed(self._key, sealed)
                except InvalidEnvelopeError as e:
                    raise StorageError("a spooled upload was changed on disk") from e
                if _LEN.unpack(plain[: _LEN.size])[0] != index:
                    raise StorageError("a spooled upload was changed on disk")
                out += plain[_LEN.size :]
        out += self._buffer
        return bytes(out)

    def close(self) -> None:
        """Forget the part: the file goes (it never had a name) and the key with it."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer = bytearray()
