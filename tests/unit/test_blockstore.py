"""PackBlockStore: round trips, dedupe, reopen, crash recovery, corruption, rotation, threads."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import IntegrityError, InvalidInputError, NotFoundError, StorageError
from gateway.store import PackBlockStore
from gateway.store import blockstore as blockstore_module
from gateway.store.unixfs import CHUNK_SIZE, build_dag, cid_to_str, file_cid

MiB = 1 << 20


def _data(n: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + n).randbytes(n)


def _packs(root: Path) -> list[Path]:
    return sorted((root / "packs").glob("pack-*.dat"))


def _pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in _packs(root))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> Iterator[PackBlockStore]:
    s = PackBlockStore(root)
    yield s
    s.close()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE - 7, 50 * MiB])
def test_put_get_round_trip(store: PackBlockStore, size: int) -> None:
    data = _data(size)
    cid = store.put(data)
    assert cid == file_cid(data)
    assert store.has(cid)
    assert store.get(cid) == data


def test_unknown_and_malformed_cids(store: PackBlockStore) -> None:
    absent = file_cid(b"never stored")
    assert not store.has(absent)
    assert not store.has("not-a-cid")
    with pytest.raises(NotFoundError):
        store.get(absent)
    with pytest.raises(InvalidInputError):
        store.get("Qm-not-a-cid")


def test_missing_child_block_is_not_found(root: Path) -> None:
    data = _data(2 * CHUNK_SIZE + 1)
    dag = build_dag(data)
    with PackBlockStore(root) as s:
        # Store only the root node: its leaves are missing.
        s._put_blocks([(dag.root, dag.blocks[-1][1])])
        assert s.has(dag.root_str)
        with pytest.raises(NotFoundError):
            s.get(dag.root_str)
        problems = list(s.verify())
        assert len(problems) == 3
        assert all(p.cid == dag.root_str and "missing" in p.problem for p in problems)


def test_dedupe_same_object_twice(store: PackBlockStore, root: Path) -> None:
    data = _data(3 * CHUNK_SIZE)
    cid = store.put(data)
    size = _pack_bytes(root)
    assert store.put(data) == cid
    assert _pack_bytes(root) == size
    assert store.get(cid) == data


def test_dedupe_repeated_chunks_within_an_object(store: PackBlockStore, root: Path) -> None:
    cid = store.put(bytes(5 * CHUNK_SIZE))  # five identical leaves
    assert _pack_bytes(root) < 2 * CHUNK_SIZE
    assert store.get(cid) == bytes(5 * CHUNK_SIZE)


def test_reopen_after_close_finds_everything(root: Path) -> None:
    objects = {}
    with PackBlockStore(root) as s:
        for i, size in enumerate([0, 1, CHUNK_SIZE + 1, 700_000]):
            data = _data(size, i)
            objects[s.put(data)] = data
    with PackBlockStore(root) as s:
        for cid, data in objects.items():
            assert s.get(cid) == data
        assert list(s.verify()) == []
        cid = s.put(b"after reopen")
    with PackBlockStore(root) as s:
        assert s.get(cid) == b"after reopen"
        assert all(s.has(c) for c in objects)


def test_second_open_is_refused(store: PackBlockStore, root: Path) -> None:
    with pytest.raises(StorageError, match="already open"):
        PackBlockStore(root)


def test_closed_store_refuses_work(root: Path) -> None:
    s = PackBlockStore(root)
    cid = s.put(b"x")
    s.close()
    s.close()  # idempotent
    for call in (lambda: s.put(b"y"), lambda: s.get(cid), lambda: list(s.verify())):
        with pytest.raises(StorageError):
            call()


def _fill(root: Path, count: int = 4) -> dict[str, bytes]:
    objects = {}
    with PackBlockStore(root) as s:
        for i in range(count):
            data = _data(CHUNK_SIZE + 1000 * i, i)
            objects[s.put(data)] = data
    return objects


def test_torn_tail_truncated_mid_record(root: Path) -> None:
    objects = _fill(root)
    last_cid = list(objects)[-1]
    (pack,) = _packs(root)
    size = pack.stat().st_size
    os.truncate(pack, size - 100)  # cut into the last put's last record
    with PackBlockStore(root) as s:
        for cid, data in list(objects.items())[:-1]:
            assert s.get(cid) == data
        assert not s.has(last_cid)
        problems = list(s.verify())
        assert any("torn" in p.problem for p in problems)
        assert all(p.cid == "" for p in problems)  # no stored block is bad
        # The store keeps working after the cut, and the object can be put again.
        assert s.put(objects[last_cid]) == last_cid
        assert s.get(last_cid) == objects[last_cid]
    quarantined = list((root / "quarantine").iterdir())
    assert len(quarantined) == 1
    with PackBlockStore(root) as s:
        assert all(s.get(c) == d for c, d in objects.items())


def test_torn_tail_garbage_appended(root: Path) -> None:
    objects = _fill(root)
    (pack,) = _packs(root)
    size = pack.stat().st_size
    with pack.open("ab") as f:
        f.write(b"ZTB\x01" + os.urandom(5000))
    with PackBlockStore(root) as s:
        assert pack.stat().st_size == size
        assert all(s.get(c) == d for c, d in objects.items())
        assert s.put(b"more") == file_cid(b"more")


def test_torn_record_with_valid_header_but_unwritten_data(root: Path) -> None:
    # After a power cut the file may have grown (header written) while the data pages were
    # never written: zeros. Such a record must not be indexed, or a later put of the same
    # bytes would be deduplicated against garbage.
    objects = _fill(root, 2)
    data = _data(CHUNK_SIZE, 99)
    cid = build_dag(data).root
    with _packs(root)[0].open("ab") as f:
        f.write(blockstore_module._header(cid, len(data)) + bytes(len(data)))
    with PackBlockStore(root) as s:
        assert not s.has(build_dag(data).root_str)
        assert s.put(data) == build_dag(data).root_str
        assert s.get(build_dag(data).root_str) == data
        assert all(s.get(c) == d for c, d in objects.items())


def _flip_byte_of(root: Path, needle: bytes) -> None:
    for pack in _packs(root):
        raw = bytearray(pack.read_bytes())
        at = raw.find(needle)
        if at >= 0:
            raw[at + 3] ^= 0x40
            pack.write_bytes(bytes(raw))
            return
    raise AssertionError("needle not found in any pack")


def test_flipped_byte_is_detected_and_named(root: Path) -> None:
    data = _data(2 * CHUNK_SIZE + 10)
    with PackBlockStore(root) as s:
        cid = s.put(data)
        other = s.put(b"untouched")
    _flip_byte_of(root, data[CHUNK_SIZE + 500 : CHUNK_SIZE + 532])  # inside the 2nd leaf
    bad_leaf = build_dag(data).blocks[1][0]
    with PackBlockStore(root) as s:
        with pytest.raises(IntegrityError):
            s.get(cid)
        assert s.get(other) == b"untouched"
        problems = list(s.verify())
        assert [p.cid for p in problems] == [cid_to_str(bad_leaf)]
        assert "does not match" in problems[0].problem
        with pytest.raises(IntegrityError):
            s.export_car([cid], open(os.devnull, "wb"))  # noqa: SIM115
        # Putting the same bytes again rewrites the rotten block instead of deduplicating.
        assert s.put(data) == cid
        assert s.get(cid) == data
    with PackBlockStore(root) as s:
        assert s.get(cid) == data


def test_pack_rotation_and_sidecar_index(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    objects = {}
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        for i in range(9):
            data = _data(600_000, i)
            objects[s.put(data)] = data
        assert all(s.get(c) == d for c, d in objects.items())
    packs = _packs(root)
    assert len(packs) >= 5
    sealed = [p for p in packs if p.with_suffix(".idx").exists()]
    assert sealed == packs[:-1]
    assert all(p.stat().st_size <= MiB for p in packs)

    # Reopening reads sidecars, not sealed packs: only the active pack is scanned.
    scanned: list[int] = []
    real_scan = PackBlockStore._scan

    def counting_scan(
        self: PackBlockStore, fd: int, pack_id: int, size: int, *, check_hashes: bool
    ) -> object:
        scanned.append(pack_id)
        return real_scan(self, fd, pack_id, size, check_hashes=check_hashes)

    monkeypatch.setattr(PackBlockStore, "_scan", counting_scan)
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        assert all(s.get(c) == d for c, d in objects.items())
        assert list(s.verify()) == []
    assert scanned == [len(packs)]

    # A damaged or missing sidecar falls back to a full scan of that pack, then is rebuilt.
    idx = sealed[0].with_suffix(".idx")
    raw = bytearray(idx.read_bytes())
    raw[10] ^= 1
    idx.write_bytes(bytes(raw))
    sealed[1].with_suffix(".idx").unlink()
    scanned.clear()
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        assert all(s.get(c) == d for c, d in objects.items())
    assert sorted(scanned) == [1, 2, len(packs)]
    assert sealed[1].with_suffix(".idx").exists()
    scanned.clear()
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        assert all(s.get(c) == d for c, d in objects.items())
    assert scanned == [len(packs)]


def test_object_larger_than_a_pack(root: Path) -> None:
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        small = s.put(b"small")
        big_data = _data(3 * MiB)
        big = s.put(big_data)
        assert s.get(big) == big_data
    with PackBlockStore(root, pack_max_bytes=MiB) as s:
        assert s.get(small) == b"small"
        assert s.get(big) == big_data


def test_concurrent_puts(root: Path) -> None:
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    shared = _data(2 * CHUNK_SIZE + 3, 1234)

    def worker(n: int) -> None:
        try:
            for i in range(12):
                seed = n * 100 + i
                size = random.Random(seed).randrange(1, 700_000)
                data = shared if i % 4 == 0 else _data(size, seed)
                cid = s.put(data)
                assert s.get(cid) == data
                with lock:
                    results[cid] = data
        except BaseException as e:
            errors.append(e)

    with PackBlockStore(root, pack_max_bytes=4 * MiB) as s:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(s.get(c) == d for c, d in results.items())
        assert list(s.verify()) == []
        # The object every thread put is stored exactly once.
        leaf = shared[:CHUNK_SIZE]
        assert sum(p.read_bytes().count(leaf[:4096]) for p in _packs(root)) == 1
    with PackBlockStore(root, pack_max_bytes=4 * MiB) as s:
        assert all(s.get(c) == d for c, d in results.items())


def test_failed_fsync_poisons_the_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = PackBlockStore(root)
    good = s.put(b"before")

    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blockstore_module, "_fdatasync", broken)
    with pytest.raises(StorageError):
        s.put(b"during")
    assert not s.has(file_cid(b"during"))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="reopen"):
        s.put(b"after")
    assert s.get(good) == b"before"  # reads keep working
    s.close()
    with PackBlockStore(root) as s2:
        assert s2.get(good) == b"before"
        assert s2.put(b"after") == file_cid(b"after")


_CRASH_WRITER = """
import sys
from pathlib import Path
from gateway.store import PackBlockStore
import random
s = PackBlockStore(Path(sys.argv[1]))
i = 0
while True:
    data = random.Random(i).randbytes(300_000 + i)
    print(s.put(data), i, flush=True)
    i += 1
"""


def test_kill_9_loses_no_acknowledged_put(root: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_WRITER, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    acked: dict[str, int] = {}
    for line in proc.stdout:
        cid, seed = line.split()
        acked[cid] = int(seed)
        if len(acked) >= 25:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:  # puts acknowledged before the kill landed
        cid, seed = line.split()
        acked[cid] = int(seed)
    with PackBlockStore(root) as s:
        for cid, n in acked.items():
            assert s.get(cid) == random.Random(n).randbytes(300_000 + n)
        assert [p for p in s.verify() if p.cid] == []
