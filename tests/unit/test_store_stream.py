"""``ContentStore.open``: an object streamed block by block, each block verified first."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import IntegrityError, InvalidInputError, NotFoundError
from gateway.store import PackBlockStore
from gateway.store.unixfs import CHUNK_SIZE, build_dag

MiB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PackBlockStore]:
    s = PackBlockStore(tmp_path / "store", runway_bytes=0)
    yield s
    s.close()


def _data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 7919 + n).randbytes(n)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE - 3])
def test_open_streams_what_get_returns(store: PackBlockStore, size: int) -> None:
    data = _data(size)
    cid = store.put(data)
    parts = list(store.open(cid))
    assert b"".join(parts) == data == store.get(cid)
    assert all(len(p) <= CHUNK_SIZE for p in parts)


def test_deep_tree_streams_in_order(tmp_path: Path) -> None:
    """A DAG three levels deep (small chunks and fan-out), put as blocks: read back in order."""
    data = _data(5000, 3)
    dag = build_dag(data, chunk_size=100, max_links=4)
    with PackBlockStore(tmp_path / "s", runway_bytes=0) as s:
        s._put_blocks(dag.blocks)
        assert b"".join(s.open(dag.root_str)) == data


def test_bad_cid_refused_before_iteration(store: PackBlockStore) -> None:
    with pytest.raises(InvalidInputError):
        store.open("not-a-cid")
    with pytest.raises(NotFoundError):
        next(store.open(build_dag(b"absent").root_str))


def _flip_in_packs(root: Path, needle: bytes) -> None:
    for pack in sorted((root / "packs").glob("pack-*.dat")):
        raw = bytearray(pack.read_bytes())
        at = raw.find(needle)
        if at >= 0:
            raw[at + 5] ^= 0x01
            pack.write_bytes(bytes(raw))
            return
    raise AssertionError("needle not in any pack")


def test_late_damage_raises_only_when_reached(tmp_path: Path) -> None:
    """Blocks before the damaged one are yielded intact; the damaged one is never yielded."""
    root = tmp_path / "store"
    data = _data(8 * CHUNK_SIZE, 1)
    with PackBlockStore(root, runway_bytes=0) as s:
        cid = s.put(data)
    bad_leaf = 6
    _flip_in_packs(root, data[bad_leaf * CHUNK_SIZE : bad_leaf * CHUNK_SIZE + 64])
    got: list[bytes] = []
    with PackBlockStore(root, read_only=True) as s:
        reader = s.open(cid)
        with pytest.raises(IntegrityError, match="does not match its CID"):
            for part in reader:
                got.append(part)
    assert len(got) == bad_leaf
    assert b"".join(got) == data[: bad_leaf * CHUNK_SIZE]


def test_missing_late_block_raises_when_reached(tmp_path: Path) -> None:
    data = _data(4 * CHUNK_SIZE, 2)
    dag = build_dag(data)
    with PackBlockStore(tmp_path / "s", runway_bytes=0) as s:
        s._put_blocks([b for i, b in enumerate(dag.blocks) if i != 3])  # leaf 3 never stored
        got = []
        with pytest.raises(NotFoundError):
            for part in s.open(dag.root_str):
                got.append(part)
        assert b"".join(got) == data[: 3 * CHUNK_SIZE]


def test_memory_stays_flat_for_a_large_object(store: PackBlockStore) -> None:
    """Streaming 64 MiB allocates at most a few blocks at a time; ``get`` holds it all."""
    size = 64 * MiB
    cid = store.put(_data(size, 4))
    gc.collect()
    tracemalloc.start()
    try:
        total = 0
        for part in store.open(cid):
            total += len(part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert peak < 4 * CHUNK_SIZE, f"peak {peak} bytes while streaming {size}"
