"""The STOW-RS spool (gateway/spool.py): a part comes back whole, never lies on disk in
clear, and a chunk changed on disk does not open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import StorageError
from gateway.spool import CHUNK, Spool


def test_a_small_part_stays_in_memory(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.write(b"DICM" * 10)
    assert s.read() == b"DICM" * 10 and s._file is None
    s.close()


def test_a_large_part_round_trips_and_is_encrypted_on_disk(tmp_path: Path) -> None:
    plain = os.urandom(CHUNK // 2) + b"PATIENT^NAME" * (CHUNK // 4) + os.urandom(1234)
    s = Spool(tmp_path)
    for i in range(0, len(plain), 65536):
        s.write(memoryview(plain)[i : i + 65536])
    assert s.size == len(plain)
    assert s.read() == plain
    assert s.read() == plain  # read twice: check, then ingest
    assert s._file is not None
    s._file.seek(0)
    on_disk = s._file.read()
    assert b"PATIENT^NAME" not in on_disk
    assert list(tmp_path.iterdir()) == []  # the file never had a name
    s.close()


def test_a_chunk_changed_on_disk_does_not_open(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.write(os.urandom(2 * CHUNK + 10))
    assert s._file is not None
    s._file.seek(100)
    s._file.write(b"\x00")
    with pytest.raises(StorageError, match="changed on disk"):
        s.read()
    s.close()
