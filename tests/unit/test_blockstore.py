"""PackBlockStore: round trips, dedupe, reopen, crash recovery, corruption, rotation, threads."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
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


def _logical_bytes(s: PackBlockStore) -> int:
    """Bytes of records in all packs: file sizes include the zero runway, this does not."""
    return sum(s._sizes.values())


def _logical_end(root: Path) -> int:
    """Where the records of the last pack end, as a reader sees it (store not open)."""
    with PackBlockStore(root, read_only=True) as r:
        return r._sizes[r._active]


def _wait_for_runway(s: PackBlockStore, at_least: int = 1) -> None:
    """Wait until the extender has zeroed ``at_least`` bytes past the last record (it writes
    in idle time with fdatasync: slow on a shared disk, hence the generous deadline)."""
    deadline = time.monotonic() + 120
    while s._alloc_end - s._sizes[s._active] < at_least:
        assert time.monotonic() < deadline, "extender made no runway"
        time.sleep(0.005)


def _crash_copy(s: PackBlockStore, root: Path, dest: Path) -> Path:
    """What a kill -9 would leave: the store's files as they are now, without CLEAN."""
    with s._io_lock, s._lock:  # no zeros or records half-copied
        shutil.copytree(root, dest)
    assert not (dest / "packs" / "CLEAN").exists()
    return dest


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
    size = _logical_bytes(store)
    assert store.put(data) == cid
    assert _logical_bytes(store) == size
    assert store.get(cid) == data


def test_dedupe_repeated_chunks_within_an_object(store: PackBlockStore, root: Path) -> None:
    cid = store.put(bytes(5 * CHUNK_SIZE))  # five identical leaves
    assert _logical_bytes(store) < 2 * CHUNK_SIZE
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
    """Put a few objects and close, leaving zero runway after the last record."""
    objects = {}
    with PackBlockStore(root) as s:
        for i in range(count):
            data = _data(CHUNK_SIZE + 1000 * i, i)
            objects[s.put(data)] = data
        _wait_for_runway(s, MiB)
    return objects


def test_torn_tail_truncated_mid_record(root: Path) -> None:
    objects = _fill(root)
    last_cid = list(objects)[-1]
    (pack,) = _packs(root)
    os.truncate(pack, _logical_end(root) - 100)  # cut into the last put's last record
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
    end = _logical_end(root)
    garbage = b"ZTB\x01" + os.urandom(5000)
    with pack.open("r+b") as f:  # into the zero runway, right after the last record
        f.seek(end)
        f.write(garbage)
    with PackBlockStore(root) as s:
        assert s._sizes[s._active] == end
        assert all(s.get(c) == d for c, d in objects.items())
        assert s.put(b"more") == file_cid(b"more")
    (kept,) = (root / "quarantine").iterdir()
    assert kept.read_bytes() == garbage  # the torn bytes, without the zeros after them


@pytest.mark.parametrize("clean", [True, False])
def test_torn_record_with_valid_header_but_unwritten_data(root: Path, clean: bool) -> None:
    # After a power cut the header may have reached the disk while the data pages did not:
    # inside the runway they read as zeros. Such a record must not be indexed, or a later
    # put of the same bytes would be deduplicated against garbage. Detected with or without
    # a CLEAN marker (with one, the marker's logical end no longer holds a zero header).
    objects = _fill(root, 2)
    data = _data(CHUNK_SIZE, 99)
    cid = build_dag(data).root
    end = _logical_end(root)
    if not clean:
        (root / "packs" / "CLEAN").unlink()
    with _packs(root)[0].open("r+b") as f:
        f.seek(end)
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


# ---------------------------------------------------------------------- zero runway


def test_runway_is_zeroed_ahead_and_capped_at_pack_size(root: Path) -> None:
    with PackBlockStore(root, pack_max_bytes=3 * MiB) as s:
        cid = s.put(_data(300_000))
        _wait_for_runway(s, 2 * MiB)
        (pack,) = _packs(root)
        end = s._sizes[s._active]
        size = pack.stat().st_size
        assert end < size <= 3 * MiB  # never zeroed past the point where the pack is sealed
        with pack.open("rb") as f:
            f.seek(end)
            assert f.read() == bytes(size - end)
        assert list(s.verify()) == []  # the runway is not a problem
        assert s.get(cid) == _data(300_000)


@pytest.mark.parametrize("clean", [True, False])
def test_reopen_with_runway_resumes_after_last_record(
    root: Path, tmp_path: Path, clean: bool
) -> None:
    objects = {}
    s = PackBlockStore(root)
    for i in range(6):
        data = _data(530_000, i)
        objects[s.put(data)] = data
    _wait_for_runway(s, 4 * MiB)
    end = s._sizes[s._active]
    if clean:
        s.close()
        target = root
    else:
        target = _crash_copy(s, root, tmp_path / "crashed")
        s.close()
    (pack,) = _packs(target)
    assert pack.stat().st_size >= end + 4 * MiB  # the runway is really there
    with PackBlockStore(target) as s2:
        assert s2._sizes[s2._active] == end
        assert all(s2.get(c) == d for c, d in objects.items())
        assert list(s2.verify()) == []
        extra = _data(530_000, 77)
        cid = s2.put(extra)
        # The next record starts exactly where the last one ended.
        first_leaf = build_dag(extra).blocks[0][0]
        assert s2._index[first_leaf].offset == end + blockstore_module._HDR_SIZE + len(first_leaf)
    assert not (target / "quarantine").exists()  # pure zero runway is not a torn tail
    with PackBlockStore(target) as s3:
        assert s3.get(cid) == extra
        assert all(s3.get(c) == d for c, d in objects.items())


def test_torn_record_inside_runway_after_crash(root: Path, tmp_path: Path) -> None:
    # A crash while a put was being flushed: its header and the first part of its data
    # reached the disk, the rest of the record is still runway zeros.
    s = PackBlockStore(root)
    objects = {s.put(_data(400_000, i)): _data(400_000, i) for i in range(3)}
    _wait_for_runway(s, 2 * MiB)
    end = s._sizes[s._active]
    crashed = _crash_copy(s, root, tmp_path / "crashed")
    s.close()
    torn = _data(CHUNK_SIZE, 5)
    torn_cid = build_dag(torn).root
    record = blockstore_module._header(torn_cid, len(torn)) + torn[: len(torn) // 2]
    (pack,) = _packs(crashed)
    with pack.open("r+b") as f:
        f.seek(end)
        f.write(record)
    with PackBlockStore(crashed) as s2:
        assert s2._sizes[s2._active] == end
        assert not s2.has(cid_to_str(torn_cid))
        with pytest.raises(NotFoundError):
            s2.get_block(cid_to_str(torn_cid))
        problems = list(s2.verify())
        assert problems and all(p.cid == "" and "torn" in p.problem for p in problems)
        assert all(s2.get(c) == d for c, d in objects.items())
        # The same bytes can be put again, and later puts are fine.
        assert s2.get_block(s2.put(torn)) == torn
        more = s2.put(_data(530_000, 6))
    (kept,) = (crashed / "quarantine").iterdir()
    assert kept.read_bytes() == record
    with PackBlockStore(crashed) as s3:
        assert s3.get(more) == _data(530_000, 6)
        assert s3.get_block(cid_to_str(torn_cid)) == torn
        assert all(s3.get(c) == d for c, d in objects.items())


def test_leftovers_after_a_zero_header_are_quarantined(root: Path, tmp_path: Path) -> None:
    # The page holding a torn record's header never reached the disk, later pages did:
    # the scan stops at zeros, but the bytes after them must not stay in the runway.
    s = PackBlockStore(root)
    cid = s.put(_data(300_000))
    _wait_for_runway(s, MiB)
    end = s._sizes[s._active]
    crashed = _crash_copy(s, root, tmp_path / "crashed")
    s.close()
    (pack,) = _packs(crashed)
    with pack.open("r+b") as f:
        f.seek(end + 8192)
        f.write(b"\x5a" * 4096)
    with PackBlockStore(crashed) as s2:
        assert s2._sizes[s2._active] == end
        assert s2.get(cid) == _data(300_000)
        assert any("torn" in p.problem for p in s2.verify())
        after = s2.put(_data(600_000, 1))
    with PackBlockStore(crashed) as s3:
        assert s3.get(after) == _data(600_000, 1)
        assert [p for p in s3.verify() if "torn" not in p.problem] == []


def test_reader_sees_new_records_and_stops_at_runway(root: Path) -> None:
    with PackBlockStore(root) as writer:
        first = writer.put(_data(530_000, 1))
        _wait_for_runway(writer, MiB)
        with PackBlockStore(root, read_only=True) as reader:
            assert reader.get(first) == _data(530_000, 1)
            later = writer.put(_data(530_000, 2))
            assert reader.has(later)  # a miss re-reads what was appended since
            assert reader.get(later) == _data(530_000, 2)
            assert reader._sizes[reader._active] == writer._sizes[writer._active]
            assert not reader.has(file_cid(b"never stored"))
            assert list(reader.verify()) == []
            with pytest.raises(StorageError, match="read-only"):
                reader.put(b"no")


def test_rotation_truncates_runway_and_sidecar_records_logical_size(root: Path) -> None:
    objects = {}
    with PackBlockStore(root, pack_max_bytes=2 * MiB) as s:
        for i in range(10):
            data = _data(530_000, i)
            objects[s.put(data)] = data
            _wait_for_runway(s, 1)
    packs = _packs(root)
    assert len(packs) >= 3
    for pack in packs[:-1]:
        raw = pack.with_suffix(".idx").read_bytes()
        size = blockstore_module._IDX_HEAD.unpack_from(raw, 0)[2]
        assert size == pack.stat().st_size  # cut to its last record: no runway kept
        assert pack.read_bytes()[-1000:] != bytes(1000)
    with PackBlockStore(root, pack_max_bytes=2 * MiB) as s:
        assert all(s.get(c) == d for c, d in objects.items())
        assert list(s.verify()) == []


def test_extension_failure_falls_back_to_appending(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, start: int, end: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(blockstore_module, "_write_zeros", disk_full)
    with PackBlockStore(root) as s:
        objects = {s.put(_data(530_000, i)): _data(530_000, i) for i in range(4)}
        (pack,) = _packs(root)
        assert pack.stat().st_size == s._sizes[s._active]  # plain appends, no runway
        assert all(s.get(c) == d for c, d in objects.items())
        # Truly full: the put fails, nothing is left behind, and the store stays usable.
        real_pwrite_all = blockstore_module._pwrite_all

        def full(fd: int, buffers: object, offset: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(blockstore_module, "_pwrite_all", full)
        with pytest.raises(StorageError, match="No space"):
            s.put(b"does not fit")
        assert pack.stat().st_size == s._sizes[s._active]
        monkeypatch.setattr(blockstore_module, "_pwrite_all", real_pwrite_all)
        cid = s.put(b"fits again")
    with PackBlockStore(root) as s:
        assert s.get(cid) == b"fits again"
        assert all(s.get(c) == d for c, d in objects.items())
        assert list(s.verify()) == []


def test_plain_append_mode_without_runway(root: Path) -> None:
    with PackBlockStore(root, runway_bytes=0) as s:
        cid = s.put(_data(530_000))
        (pack,) = _packs(root)
        assert pack.stat().st_size == s._sizes[s._active]
    with PackBlockStore(root) as s:  # and a store written that way opens with a runway
        assert s.get(cid) == _data(530_000)


# ---------------------------------------------------------------------- put_nowait


def test_put_nowait_is_visible_only_once_durable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    flushing = threading.Event()
    real = blockstore_module._fdatasync

    def held_fdatasync(fd: int) -> None:
        flushing.set()
        assert gate.wait(10)
        real(fd)

    with PackBlockStore(root, runway_bytes=2 * MiB) as s:
        _wait_for_runway(s, 2 * MiB)  # extender idle: the held flush is the syncer's
        monkeypatch.setattr(blockstore_module, "_fdatasync", held_fdatasync)
        data = _data(530_000)
        pending = s.put_nowait(data)
        assert pending.cid == file_cid(data)
        assert flushing.wait(10)  # the flush started without anyone calling wait()
        assert not s.has(pending.cid)
        with pytest.raises(NotFoundError):
            s.get(pending.cid)
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (pending.wait(), done.set()))
        waiter.start()
        assert not done.wait(0.05)  # wait() blocks while the flush is held
        gate.set()
        waiter.join(10)
        assert done.is_set()
        assert s.has(pending.cid)
        assert s.get(pending.cid) == data
        pending.wait()  # again: returns at once


def test_put_nowait_from_threads_all_durable(root: Path, tmp_path: Path) -> None:
    results: dict[str, bytes] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        try:
            for i in range(10):
                data = _data(300_000 + i, n * 100 + i)
                pending = s.put_nowait(data)
                time.sleep(0.0005)  # the caller's own work while the flush runs
                pending.wait()
                assert s.has(pending.cid)
                with lock:
                    results[pending.cid] = data
        except BaseException as e:
            errors.append(e)

    s = PackBlockStore(root, pack_max_bytes=8 * MiB)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 60
    crashed = _crash_copy(s, root, tmp_path / "crashed")
    s.close()
    assert not any(t.is_alive() for t in s._threads)  # close() stopped syncer and extender
    for target in (root, crashed):
        with PackBlockStore(target, pack_max_bytes=8 * MiB) as s2:
            assert all(s2.get(c) == d for c, d in results.items())
            assert list(s2.verify()) == []


def test_failed_flush_fails_the_waiter(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with PackBlockStore(root) as s:
        good = s.put(b"before")

        def broken(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(blockstore_module, "_fdatasync", broken)
        pending = s.put_nowait(b"during")
        with pytest.raises(StorageError, match="not durable"):
            pending.wait()
        assert not s.has(pending.cid)
        monkeypatch.undo()
        with pytest.raises(StorageError, match="reopen"):
            s.put_nowait(b"after")
    with PackBlockStore(root) as s:
        assert s.get(good) == b"before"


def test_close_flushes_pending_puts(root: Path) -> None:
    s = PackBlockStore(root)
    pendings = [s.put_nowait(_data(200_000, i)) for i in range(5)]
    s.close()
    for p in pendings:
        p.wait()  # durable: close() flushed before stopping the syncer
    with pytest.raises(StorageError, match="closed"):
        s.put_nowait(b"late")
    with PackBlockStore(root) as s2:
        assert all(s2.get(p.cid) == _data(200_000, i) for i, p in enumerate(pendings))


def test_rot_mid_pack_after_crash_keeps_later_records(root: Path, tmp_path: Path) -> None:
    """A rotten record in the middle of the active pack, found during crash recovery, is
    skipped and reported; every whole record after it stays readable (no cut, no quarantine)."""
    first = _data(3000, seed=1)
    later = [_data(2000 + i, seed=10 + i) for i in range(3)]
    with PackBlockStore(root) as s:
        bad_cid = s.put(first)
        good = [s.put(x) for x in later]
        image = _crash_copy(s, root, tmp_path / "crashed")
    _flip_byte_of(image, first[100:132])
    with PackBlockStore(image) as s:
        for cid, data in zip(good, later, strict=True):
            assert s.get(cid) == data
        with pytest.raises((IntegrityError, NotFoundError)):
            s.get(bad_cid)
        problems = [p for p in s.verify() if p.cid == bad_cid]
        assert problems and any("rot or tampering" in p.problem for p in problems)
        assert not (image / "quarantine").exists() or not list((image / "quarantine").iterdir())
        after = s.put(b"appended after recovery")
    with PackBlockStore(image) as s:
        assert s.get(after) == b"appended after recovery"
        assert all(s.get(c) == d for c, d in zip(good, later, strict=True))
