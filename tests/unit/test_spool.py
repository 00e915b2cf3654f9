"""The STOW-RS spool (gateway/spool.py): parts come back whole, never lie on disk in
clear, share one unnamed file, and a chunk changed or moved on disk does not open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.spool import CHUNK, SpoolFile


def test_parts_round_trip_and_are_encrypted_on_disk(tmp_path: Path) -> None:
    spool = SpoolFile(tmp_path)
    plain = [
        os.urandom(CHUNK // 2) + b"PATIENT^NAME" * (CHUNK // 4) + os.urandom(1234),
        b"DICM" * 10,
        os.urandom(3 * CHUNK),
    ]
    parts = [spool.part() for _ in plain]
    for part, data in zip(parts, plain, strict=True):
        for i in range(0, len(data), 65536):
            part.write(memoryview(data)[i : i + 65536])
        part.finish()
        assert part._buffer == bytearray()  # nothing of a finished part stays in memory
    for part, data in zip(parts, plain, strict=True):
        assert part.size == len(data)
        assert part.read() == data
        assert part.read() == data  # read twice: check, then ingest
    assert spool._file is not None
    spool._file.seek(0)
    assert b"PATIENT^NAME" not in spool._file.read()
    assert list(tmp_path.iterdir()) == []  # the file never had a name
    spool.close()


@pytest.mark.parametrize("how", ["changed", "moved"])
def test_a_chunk_changed_or_moved_on_disk_does_not_open(tmp_path: Path, how: str) -> None:
    spool = SpoolFile(tmp_path)
    a, b = spool.part(), spool.part()
    a.write(os.urandom(100))
    a.finish()
    b.write(os.urandom(100))
    b.finish()
    assert spool._file is not None
    if how == "changed":
        spool._file.seek(60)
        spool._file.write(b"\x00")
    else:  # the two chunks swapped on disk: same key and length, wrong number
        (oa, la, _), (ob, lb, _) = a._chunks[0], b._chunks[0]
        assert la == lb
        spool._file.seek(oa)
        first = spool._file.read(la)
        spool._file.seek(ob)
        second = spool._file.read(lb)
        spool._file.seek(oa)
        spool._file.write(second)
        spool._file.seek(ob)
        spool._file.write(first)
    with pytest.raises(StorageError, match="changed on disk"):
        a.read()
    spool.close()
