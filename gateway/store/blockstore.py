"""The embedded content store: IPFS blocks in append-only pack files on local disk.

Why pack files: a put must be durable before the gateway answers C-STORE success, and the
gateway must absorb ~120 CT instances (~530 KB each) a second. One fsync'd file per block
would cost several fsyncs (file + directory) per block; appending every new block of an
object to one open pack file and calling ``fdatasync`` once costs one disk flush per put
(and concurrent puts share flushes: group commit).

Layout under ``root``::

    LOCK                      flock'd while a process has the store open
    packs/pack-000001.dat     records, append-only, then zeros (the runway) in the active pack
    packs/pack-000001.idx     sidecar index, written when the pack is sealed
    packs/CLEAN               written by close(): "the active pack's records ended here, cleanly"
    quarantine/               torn tails cut from a pack after a crash, kept for inspection

A record is ``magic "ZTB\\x01" | cid length u8 | data length u32le | crc32 u32le | cid | data``;
the CRC covers the two lengths and the CID, so a torn or garbage header is recognised.
Block data needs no CRC: every read recomputes its sha2-256 against the CID.

Zero runway: on ext4, fdatasync after *appending* 530 KB costs a journal commit for the new
size and extents (~1.6-2.8 ms here), while fdatasync after overwriting blocks that are already
allocated and written costs only the data write (~1.1 ms). So a background extender keeps the
active pack's file ``runway_bytes`` (64 MiB) ahead of the last record, written with real zeros
and fdatasync'd (fallocate alone leaves "unwritten" extents whose conversion is again a
journal commit). Records are written into that space. Consequences:

* The logical end of a pack is not its file size: a record header of all zero bytes ends the
  records. ``CLEAN`` records the logical end; sealed packs are truncated to it before their
  sidecar is written, so they never keep a runway.
* The extender writes 512 KiB at a time and holds the flush lock meanwhile, so a data flush
  never has to write back zero pages or wait for their journal commit. Zeroing costs more
  disk time than it saves, so it only uses idle time (1 ms after the last append or flush):
  at a modality's pace that is most of every gap; flat out the extender starves and puts
  simply append, as without a runway.
* When the runway is used up (or extending fails, e.g. ENOSPC) a put appends past it: the
  old, slower path, which works until the disk is really full.
* The gateway turns it off by default (``store.runway_mb = 0``): measured end to end on
  ext4 on virtio, flat out, the zeroing cost more than the cheaper fsyncs saved (273 against
  290-296 instances/s). The class default keeps it on, so its tests exercise it.

Crash safety:

* A put is acknowledged (``put`` returns, ``PendingPut.wait`` returns) only after
  ``fdatasync`` covered all its blocks. Blocks become visible to ``get``/``has``/dedupe only
  then, so nothing ever depends on unsynced bytes.
* Writes are made in order under a lock, so everything before the last successful
  fdatasync is durable; a crash can only leave damage in the tail after it.
* On open, a pack that was not closed cleanly is re-read in full and every record's header
  CRC and sha2-256 are checked, up to the first bad record or zero header. If anything but
  zeros follows (a torn record, or pieces of one whose header page never reached the disk),
  the rest is copied to ``quarantine/`` and the file is cut there; the extender then writes
  fresh zeros. A torn record is therefore never indexed or served. Pure zero runway is not
  damage and is kept. A cleanly closed pack (``CLEAN`` names its logical end, and a zero
  header or the end of file is there) only needs its headers read.
* Sealed packs (full at ``pack_max_bytes``) get a checksummed sidecar index, fsync'd before
  the next pack is created, so reopening a large store reads one small file per pack.
* A failed fdatasync (the syncer's or the extender's: both flush the same file) poisons the
  store (Linux may drop the dirty pages and report success later): every later put fails
  until the store is reopened and recovery re-checks the tail.

Dedupe: a block already stored is not written again, but it is re-read and checked first, so
a put of the same bytes also repairs a block that rotted on disk.

Threads: puts from several threads hash in parallel (hashlib releases the GIL) and append
under a short lock. A syncer thread calls fdatasync whenever there are unsynced appends; one
flush covers everything appended before it started (group commit). ``put_nowait`` returns
right after the append, so the flush already runs while the caller does other work (the
ingest pipeline writes its index rows) before ``PendingPut.wait``. Reads use ``os.pread`` on
the packs' kept-open descriptors and never wait for a flush.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from gateway.durable import fsync_folder
from gateway.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    StorageError,
    StoreLockedError,
    ZtbridgeError,
)
from gateway.store.base import StoreProblem
from gateway.store.car import read_car, write_car
from gateway.store.unixfs import (
    CODEC_DAG_PB,
    CODEC_RAW,
    UNIXFS_FILE,
    UNIXFS_RAW,
    BlockData,
    UnixFSData,
    block_matches,
    build_dag,
    cid_from_str,
    cid_to_str,
    decode_cid,
    decode_dag_pb,
    decode_unixfs,
)

_MAGIC = b"ZTB\x01"
_HDR = struct.Struct("<4sBII")  # magic, cid length, data length, crc32
_HDR_SIZE = _HDR.size  # 13
_MAX_CID_LEN = 128
_MAX_BLOCK = 8 << 20  # no block we write or accept comes near; larger means garbage
_SCAN_READ = _HDR_SIZE + 64  # header + a typical CID in one pread

_IDX_MAGIC = b"ZTBX\x01"
_IDX_HEAD = struct.Struct("<5sIQI")  # magic, pack id, pack size, entry count
_IDX_ENTRY = struct.Struct("<QI")  # data offset, data length (after u8 cid length + cid)

_CLEAN = struct.Struct("<5sIQI")  # magic, active pack id, its size, crc32 of the rest
_CLEAN_MAGIC = b"ZTBC\x01"

_PACK_RE = re.compile(r"^pack-(\d{6,})\.dat$")

_RUNWAY = 64 << 20  # zeroed space kept ahead of the last record in the active pack
_RUNWAY_CHUNK = 512 << 10  # zeros per write+fdatasync: also the longest a data flush waits
_RUNWAY_RETRY = 5.0  # seconds before extending again after a failure (ENOSPC, EIO on write)
_RUNWAY_IDLE = 0.001  # extend only after this long without appends or data flushes
_ZEROS = bytes(_RUNWAY_CHUNK)
_TAIL_READ = 8 << 20  # bytes per pread when checking or copying a tail

log = logging.getLogger("ztbridge.store")


def _iov_max() -> int:
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 1024
    return min(value, 1024) if value > 0 else 1024


_IOV_MAX = _iov_max()
_fdatasync = getattr(os, "fdatasync", os.fsync)
_HAVE_PWRITEV = hasattr(os, "pwritev")


@dataclass(frozen=True)
class _Loc:
    """Where a block's data lives: pack id, byte offset of the data, its length, record end."""

    pack: int
    offset: int
    length: int
    end: int


def _header(cid: bytes, length: int) -> bytes:
    crc = zlib.crc32(cid, zlib.crc32(struct.pack("<BI", len(cid), length)))
    return _HDR.pack(_MAGIC, len(cid), length, crc) + cid


def _pwrite_all(fd: int, buffers: Sequence[BlockData], offset: int) -> None:
    """Write ``buffers`` contiguously at ``offset``: one pwritev per IOV_MAX buffers.

    Short writes (rare on regular files) are finished with pwrite from a joined copy.
    """
    for i in range(0, len(buffers), _IOV_MAX):
        batch = buffers[i : i + _IOV_MAX]
        want = sum(len(b) for b in batch)
        # Without pwritev (rare platforms), everything goes through the pwrite loop below.
        written = os.pwritev(fd, batch, offset) if _HAVE_PWRITEV else 0
        offset += written
        if written < want:
            rest = memoryview(b"".join(batch))[written:]
            while rest:
                n = os.pwrite(fd, rest, offset)
                if n <= 0:
                    raise OSError("pwrite wrote nothing")
                offset += n
                rest = rest[n:]


def _write_zeros(fd: int, start: int, end: int) -> None:
    """Write zero bytes over ``start..end`` (the runway, or a failed record being undone)."""
    zeros = memoryview(_ZEROS)
    pos = start
    while pos < end:
        n = min(end - pos, len(zeros))
        _pwrite_all(fd, [zeros[:n]], pos)
        pos += n


def _nonzero_end(fd: int, start: int, end: int) -> int:
    """Offset just past the last non-zero byte in ``start..end``; ``start`` if all zeros.

    Used after a crash to tell pure runway (nothing to do) from leftovers of a torn write.
    """
    last = start
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(_TAIL_READ, end - pos), pos)
        if not chunk:
            break
        kept = len(chunk.rstrip(b"\0"))
        if kept:
            last = pos + kept
        pos += len(chunk)
    return last


def _zero_or_eof(fd: int, pos: int) -> bool:
    """Whether no record starts at ``pos``: end of file, or a header of all zero bytes."""
    head = os.pread(fd, _HDR_SIZE, pos)
    return head.count(0) == len(head)


@dataclass
class _ScanResult:
    entries: list[tuple[bytes, _Loc]]
    good_end: int  # logical end: where the next record goes
    problem: str | None  # why the scan stopped at something other than zeros or EOF
    # Whole records (valid header) whose data does not match the CID, with whole records
    # after them: rot or tampering in the middle of a pack. Skipped, reported, never served;
    # the records after them stay indexed.
    rotten: list[tuple[int, bytes]] = field(default_factory=list)


class PendingPut:
    """A put whose blocks are written but maybe not yet durable (from ``put_nowait``).

    ``cid`` is known at once; ``wait()`` returns when every block of the object is on stable
    storage and visible to ``get``/``has``, or raises StorageError if the flush failed. The
    point is to let the flush run while the caller does other work (its SQL inserts) and
    only then block, just before it acknowledges anything.
    """

    __slots__ = ("_done", "_need", "_store", "cid")

    def __init__(self, store: PackBlockStore, cid: str, need: dict[int, int]) -> None:
        self.cid = cid
        self._store = store
        self._need = need  # pack id -> record end that must be durable
        self._done = not need

    def wait(self) -> None:
        """Block until the object is durable; raise StorageError if it cannot become so."""
        if not self._done:
            self._store._wait_durable(self._need)
            self._done = True


class PackBlockStore:
    """ContentStore on append-only pack files (see module docstring for format and why).

    ``root`` is created if missing. ``pack_max_bytes`` is the size at which the active pack
    is sealed and a new one started; one put's blocks always go to a single pack, so a pack
    may exceed it by up to one object. Opening takes an exclusive lock on the store: a
    second process (or a second instance in this one) gets StorageError.

    ``runway_bytes`` is how far ahead of the last record the active pack is kept zeroed
    (0: plain appends, the old behaviour; the benchmark compares both). A writable store
    runs two daemon threads, the syncer and the extender; ``close()`` stops them.
    """

    def __init__(
        self,
        root: Path,
        pack_max_bytes: int = 1 << 30,
        *,
        read_only: bool = False,
        runway_bytes: int = _RUNWAY,
    ) -> None:
        if pack_max_bytes < 1:
            raise ValueError("pack_max_bytes must be positive")
        if runway_bytes < 0:
            raise ValueError("runway_bytes must not be negative")
        self._root = Path(root)
        self._packs_dir = self._root / "packs"
        self._quarantine_dir = self._root / "quarantine"
        self._pack_max = pack_max_bytes
        self._runway = runway_bytes
        # Guards index, pending, pack state, runway state and appends. Re-entrant because
        # sealing a pack (done under it) flushes through the same path the syncer uses.
        # Lock order: _io_lock before _lock, never the other way round.
        self._lock = threading.RLock()
        # Held for every fdatasync of the active pack, every runway write and while sealing:
        # a data flush never runs while zeros are being written to the same file (it would
        # have to write them back and wait for their journal commit), and no zeros are
        # written into a pack that is being truncated.
        self._io_lock = threading.Lock()
        self._work_cv = threading.Condition(self._lock)  # syncer: something to flush
        self._extend_cv = threading.Condition(self._lock)  # extender: maybe runway needed
        self._durable_cv = threading.Condition(self._lock)  # waiters: flush or extension done
        self._started_cv = threading.Condition(self._lock)  # put_nowait: a flush has started
        self._syncer_idle = False  # parked, waiting for work (put_nowait hands off to it)
        self._flushes_started = 0
        self._index: dict[bytes, _Loc] = {}  # durable blocks only
        self._pending: dict[bytes, _Loc] = {}  # written, waiting for fdatasync
        self._fds: dict[int, int] = {}
        self._sizes: dict[int, int] = {}  # logical end (bytes of valid records) per pack
        self._synced: dict[int, int] = {}  # bytes known durable per pack
        self._active = 0
        self._active_entries: list[tuple[bytes, _Loc]] = []
        # Active pack only: below _alloc_end the file is records or written, synced zeros,
        # so records there are overwrites; only the extender writes at or past it, inside
        # the reservation _alloc_end.._extending while that is non-zero.
        self._alloc_end = 0
        self._extending = 0
        self._blocked_appenders = 0  # puts waiting for the extension in flight to finish
        self._extend_retry_at = 0.0  # monotonic time before which the extender rests
        self._last_activity = 0.0  # monotonic time of the last append or data flush
        self._open_problems: list[StoreProblem] = []
        self._failed: BaseException | None = None
        self._closing = False  # close() started: no new puts, threads finishing
        self._closed = False
        self._lock_fd = -1
        self._threads: list[threading.Thread] = []
        # A reader (the CLI exporting or verifying while ``ztbridge up`` writes) takes no
        # lock, changes nothing on disk and picks up newly appended records on a miss.
        self._read_only = read_only
        try:
            self._open_read_only() if read_only else self._open()
        except BaseException:
            self._release_fds()
            raise
        if not read_only:
            self._start_thread(self._sync_loop, "syncer")
            if runway_bytes:
                self._start_thread(self._extend_loop, "extender")

    def _start_thread(self, target: Callable[[], None], what: str) -> None:
        # Daemon: a process that exits without close() loses only unacknowledged puts,
        # exactly as if it had crashed, instead of hanging at interpreter exit.
        thread = threading.Thread(
            target=target, name=f"blockstore-{what} {self._root}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ open / close

    def _open(self) -> None:
        try:
            created = not self._packs_dir.exists()
            self._packs_dir.mkdir(parents=True, exist_ok=True)
            if created:
                fsync_folder(self._root)
                fsync_folder(self._root.parent)
            self._lock_fd = os.open(self._root / "LOCK", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise StoreLockedError(
                    f"content store {self._root} is already open in another process or"
                    " instance; stop it first"
                ) from e
            clean = self._take_clean_marker()
            pack_ids = sorted(
                int(m.group(1))
                for name in os.listdir(self._packs_dir)
                if (m := _PACK_RE.match(name)) is not None
            )
            for pos, pack_id in enumerate(pack_ids):
                last = pos == len(pack_ids) - 1
                if self._load_sidecar(pack_id):
                    continue
                if not last:
                    self._load_unsealed_old_pack(pack_id)
                else:
                    self._open_active(pack_id, clean)
            if not pack_ids or self._active != pack_ids[-1]:
                self._new_pack((pack_ids[-1] + 1) if pack_ids else 1)
        except OSError as e:
            raise StorageError(f"cannot open content store {self._root}: {e}") from e

    def _open_read_only(self) -> None:
        """Index what is on disk without locking, recovering or writing anything."""
        try:
            self._refresh()
        except OSError as e:
            raise StorageError(f"cannot read content store {self._root}: {e}") from e

    def _refresh(self) -> None:
        """(Read-only) index packs and records appended since the last look.

        Records are indexed up to the first incomplete one: the writer may be mid-append.
        Every read still checks the block against its CID, so nothing unverified is served.
        """
        if not self._packs_dir.exists():
            return
        pack_ids = sorted(
            int(m.group(1))
            for name in os.listdir(self._packs_dir)
            if (m := _PACK_RE.match(name)) is not None
        )
        with self._lock:
            for pack_id in pack_ids:
                if pack_id not in self._fds:
                    if self._load_sidecar(pack_id):
                        continue
                    self._fds[pack_id] = os.open(self._pack_path(pack_id), os.O_RDONLY)
                    self._sizes[pack_id] = self._synced[pack_id] = 0
                fd = self._fds[pack_id]
                size = os.fstat(fd).st_size
                start = self._sizes[pack_id]
                if size <= start:
                    continue
                scan = self._scan(fd, pack_id, size, check_hashes=False, start=start)
                for cid, loc in scan.entries:
                    self._index[cid] = loc
                self._sizes[pack_id] = self._synced[pack_id] = scan.good_end
            if pack_ids:
                self._active = pack_ids[-1]

    def _take_clean_marker(self) -> tuple[int, int] | None:
        """Read and remove ``CLEAN``: its promise holds for this open only."""
        path = self._packs_dir / "CLEAN"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        path.unlink()
        fsync_folder(self._packs_dir)
        if len(raw) != _CLEAN.size:
            return None
        magic, pack_id, size, crc = _CLEAN.unpack(raw)
        if magic != _CLEAN_MAGIC or crc != zlib.crc32(raw[: _CLEAN.size - 4]):
            return None
        return pack_id, size

    def _pack_path(self, pack_id: int) -> Path:
        return self._packs_dir / f"pack-{pack_id:06d}.dat"

    def _idx_path(self, pack_id: int) -> Path:
        return self._packs_dir / f"pack-{pack_id:06d}.idx"

    def _load_sidecar(self, pack_id: int) -> bool:
        """Index a sealed pack from its sidecar; False if there is none or it does not fit."""
        try:
            raw = self._idx_path(pack_id).read_bytes()
        except FileNotFoundError:
            return False
        if len(raw) < _IDX_HEAD.size + 32 or hashlib.sha256(raw[:-32]).digest() != raw[-32:]:
            return False
        magic, idx_pack, pack_size, count = _IDX_HEAD.unpack_from(raw, 0)
        path = self._pack_path(pack_id)
        if magic != _IDX_MAGIC or idx_pack != pack_id or path.stat().st_size != pack_size:
            return False
        entries: list[tuple[bytes, _Loc]] = []
        pos = _IDX_HEAD.size
        try:
            for _ in range(count):
                cid_len = raw[pos]
                cid = raw[pos + 1 : pos + 1 + cid_len]
                offset, length = _IDX_ENTRY.unpack_from(raw, pos + 1 + cid_len)
                pos += 1 + cid_len + _IDX_ENTRY.size
                entries.append((cid, _Loc(pack_id, offset, length, offset + length)))
        except (IndexError, struct.error):
            return False
        if pos != len(raw) - 32:
            return False
        self._fds[pack_id] = os.open(path, os.O_RDONLY)
        self._sizes[pack_id] = self._synced[pack_id] = pack_size
        for cid, loc in entries:
            self._index[cid] = loc
        return True

    def _load_unsealed_old_pack(self, pack_id: int) -> None:
        """A non-last pack without a usable sidecar: re-check it fully, never truncate it.

        Normal operation always seals before starting the next pack, so this means the
        sidecar was lost or damaged. Everything up to the first bad record is indexed; a bad
        record is reported by ``verify`` and left on disk for inspection.
        """
        path = self._pack_path(pack_id)
        fd = os.open(path, os.O_RDONLY)
        self._fds[pack_id] = fd
        size = os.fstat(fd).st_size
        scan = self._scan(fd, pack_id, size, check_hashes=True)
        self._report_rotten(pack_id, scan)
        self._sizes[pack_id] = self._synced[pack_id] = scan.good_end
        for cid, loc in scan.entries:
            self._index[cid] = loc
        problem = scan.problem
        if problem is None and scan.good_end < size:
            junk = _nonzero_end(fd, scan.good_end, size)
            if junk > scan.good_end:
                problem = f"non-zero bytes after the last record (offset {scan.good_end})"
            else:
                # Pure zero runway whose seal never finished (the sidecar was lost): cutting
                # zeros destroys nothing, and sealed packs must end at their last record.
                rw = os.open(path, os.O_RDWR)
                try:
                    os.ftruncate(rw, scan.good_end)
                    os.fsync(rw)
                finally:
                    os.close(rw)
                size = scan.good_end
        if problem is None:
            self._write_sidecar(pack_id, scan.entries, size)
        else:
            self._open_problems.append(StoreProblem("", f"{path.name}: {problem}"))

    def _report_rotten(self, pack_id: int, scan: _ScanResult) -> None:
        """Record whole-but-wrong records found on open, so ``verify`` and the log name them."""
        name = self._pack_path(pack_id).name
        for pos, cid in scan.rotten:
            self._open_problems.append(
                StoreProblem(
                    cid_to_str(cid),
                    f"{name}: record at offset {pos} does not match its CID (rot or tampering);"
                    " skipped, the records after it are kept",
                )
            )

    def _open_active(self, pack_id: int, clean: tuple[int, int] | None) -> None:
        """Index the active pack; after an unclean shutdown, check it and cut a torn tail.

        ``CLEAN`` is trusted only if it names this pack and no record starts at its logical
        end (zeros or end of file there); then headers alone are read. Otherwise every
        record is hashed, and whatever is not zero after the last good one is quarantined.
        """
        path = self._pack_path(pack_id)
        fd = os.open(path, os.O_RDWR)
        self._fds[pack_id] = fd
        size = os.fstat(fd).st_size
        trusted = (
            clean is not None
            and clean[0] == pack_id
            and clean[1] <= size
            and _zero_or_eof(fd, clean[1])
        )
        scan = self._scan(fd, pack_id, size, check_hashes=not trusted)
        if trusted and (clean is None or scan.good_end != clean[1]):
            # The marker and the file disagree: take nothing on trust.
            scan = self._scan(fd, pack_id, size, check_hashes=True)
            trusted = False
        self._report_rotten(pack_id, scan)
        end = scan.good_end
        if not trusted:
            # A torn record, or bytes of one whose header page never reached the disk, may
            # sit anywhere in the runway. Cut the file at the logical end instead of zeroing
            # in place: one ftruncate+fsync either happened or not (a crash in between just
            # repeats this), it frees the torn blocks, and the extender writes fresh zeros.
            junk = _nonzero_end(fd, end, size)
            if junk > end:
                why = scan.problem or "non-zero bytes after a zero header"
                self._quarantine_tail(pack_id, fd, end, junk, why)
                size = end
        self._active = pack_id
        self._sizes[pack_id] = self._synced[pack_id] = end
        self._alloc_end = size
        self._active_entries = scan.entries
        for cid, loc in scan.entries:
            self._index[cid] = loc
        if size > end:
            # After a reboot the runway is not cached: a record's first, partial page would
            # be read from disk inside a put. Ask for it now.
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(
                    fd, end, min(size - end, self._runway or size), os.POSIX_FADV_WILLNEED
                )

    def _quarantine_tail(self, pack_id: int, fd: int, start: int, size: int, why: str) -> None:
        """Copy bytes ``start..size`` aside, then truncate the pack to ``start``.

        Only unacknowledged writes can lie past the last good record after a crash, but
        copying first means even a misdiagnosis destroys nothing. ``size`` is where the
        non-zero bytes end; zero runway after it is cut too but not copied.
        """
        self._quarantine_dir.mkdir(exist_ok=True)
        name = f"pack-{pack_id:06d}-at-{start}.torn"
        dest = self._quarantine_dir / name
        n = 1
        while dest.exists():
            n += 1
            dest = self._quarantine_dir / f"{name}.{n}"
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            pos = start
            while pos < size:
                chunk = os.pread(fd, min(_TAIL_READ, size - pos), pos)
                if not chunk:
                    break
                os.write(out, chunk)
                pos += len(chunk)
            os.fsync(out)
        finally:
            os.close(out)
        fsync_folder(self._quarantine_dir)
        os.ftruncate(fd, start)
        os.fsync(fd)
        self._open_problems.append(
            StoreProblem(
                "",
                f"{self._pack_path(pack_id).name}: torn or invalid tail at offset {start}"
                f" ({size - start} bytes: {why}) cut away on open and kept in"
                f" {dest.relative_to(self._root)}; no acknowledged put is affected",
            )
        )

    def _scan(
        self, fd: int, pack_id: int, size: int, *, check_hashes: bool, start: int = 0
    ) -> _ScanResult:
        """Walk a pack's records from ``start``; stop at the first one that is not whole.

        A header of all zero bytes (or zeros up to the end of file) is the end of the
        records, the start of the runway, not a problem. Without ``check_hashes`` only
        headers are read (the data is seeked over); with it, each record is read whole and
        its data hashed against its CID: after a crash that is what tells a record whose
        data never reached the disk (zeros behind a valid header) from a whole one.
        """
        entries: list[tuple[bytes, _Loc]] = []
        bad: list[tuple[int, bytes]] = []
        rotten: list[tuple[int, bytes]] = []
        pos = start
        while pos < size:
            head = os.pread(fd, _SCAN_READ, pos)
            if head[:_HDR_SIZE].count(0) == min(len(head), _HDR_SIZE):
                return self._scan_result(entries, pos, None, bad, rotten)
            if len(head) < _HDR_SIZE:
                return self._scan_result(entries, pos, "truncated record header", bad, rotten)
            magic, cid_len, length, crc = _HDR.unpack_from(head, 0)
            if magic != _MAGIC:
                return self._scan_result(entries, pos, "bad record magic", bad, rotten)
            if not 0 < cid_len <= _MAX_CID_LEN or length > _MAX_BLOCK:
                return self._scan_result(entries, pos, "implausible record header", bad, rotten)
            data_off = pos + _HDR_SIZE + cid_len
            end = data_off + length
            if end > size:
                return self._scan_result(
                    entries, pos, "record runs past the end of the pack", bad, rotten
                )
            if len(head) < _HDR_SIZE + cid_len:
                head = os.pread(fd, _HDR_SIZE + cid_len, pos)
            cid = head[_HDR_SIZE : _HDR_SIZE + cid_len]
            if crc != zlib.crc32(cid, zlib.crc32(struct.pack("<BI", cid_len, length))):
                return self._scan_result(
                    entries, pos, "record header checksum mismatch", bad, rotten
                )
            try:
                decode_cid(cid)
            except ValueError:
                return self._scan_result(entries, pos, "record holds an unusable CID", bad, rotten)
            if check_hashes:
                data = os.pread(fd, length, data_off)
                if len(data) != length or not block_matches(cid, data):
                    # Torn (the tail of a crash) or rotten (good records follow): decided
                    # once we know whether anything whole comes after it.
                    bad.append((pos, cid))
                    pos = end
                    continue
            if bad:
                rotten.extend(bad)
                bad = []
            entries.append((cid, _Loc(pack_id, data_off, length, end)))
            pos = end
        return self._scan_result(entries, pos, None, bad, rotten)

    @staticmethod
    def _scan_result(
        entries: list[tuple[bytes, _Loc]],
        pos: int,
        problem: str | None,
        trailing_bad: list[tuple[int, bytes]],
        rotten: list[tuple[int, bytes]],
    ) -> _ScanResult:
        """Bad records with nothing whole after them are a torn tail: the end is before them."""
        if trailing_bad:
            first, cid = trailing_bad[0]
            return _ScanResult(
                entries, first, f"block {cid_to_str(cid)} does not match its CID", rotten
            )
        return _ScanResult(entries, pos, problem, rotten)

    def _write_sidecar(
        self, pack_id: int, entries: Sequence[tuple[bytes, _Loc]], size: int
    ) -> None:
        """Write the sealed pack's index to a temp file, fsync, rename into place, fsync dir."""
        parts = [_IDX_HEAD.pack(_IDX_MAGIC, pack_id, size, len(entries))]
        for cid, loc in entries:
            parts.append(bytes((len(cid),)) + cid + _IDX_ENTRY.pack(loc.offset, loc.length))
        body = b"".join(parts)
        body += hashlib.sha256(body).digest()
        tmp = self._packs_dir / f"pack-{pack_id:06d}.idx.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _pwrite_all(fd, [body], 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._idx_path(pack_id))
        fsync_folder(self._packs_dir)

    def _new_pack(self, pack_id: int) -> None:
        path = self._pack_path(pack_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._fds[pack_id] = fd
        fsync_folder(self._packs_dir)
        self._active = pack_id
        self._sizes[pack_id] = self._synced[pack_id] = 0
        self._alloc_end = 0
        self._active_entries = []

    def _rotate(self, pack_id: int) -> None:
        """Seal ``pack_id`` if it is still the active pack and start the next one.

        Flush, cut the runway (a sealed pack ends at its last record, and its sidecar records
        that size), fsync, write the sidecar, create the next pack. Rare (every
        ``pack_max_bytes``), so doing it under both locks is fine.
        """
        with self._io_lock, self._lock:
            if self._active != pack_id:
                return  # another put sealed it first
            self._check_writable()
            size = self._sizes[pack_id]
            fd = self._fds[pack_id]
            self._sync_fd(pack_id, size)
            try:
                if os.fstat(fd).st_size != size:
                    os.ftruncate(fd, size)
                    self._alloc_end = size
                    os.fsync(fd)
                self._write_sidecar(pack_id, self._active_entries, size)
                self._new_pack(pack_id + 1)
                self._extend_cv.notify()  # the new pack has no runway yet
            except OSError as e:
                raise StorageError(f"sealing {self._pack_path(pack_id).name}: {e}") from e

    def close(self) -> None:
        """Flush, stop the threads, leave a CLEAN marker (the logical end), release files."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for cv in (self._work_cv, self._extend_cv, self._durable_cv):
                cv.notify_all()
        # The syncer leaves only once nothing is unsynced; the extender after its chunk.
        for thread in self._threads:
            thread.join()
        with self._io_lock, self._lock:
            self._closed = True
            try:
                if self._failed is None and self._fds and not self._read_only:
                    size = self._sizes[self._active]
                    self._sync_fd(self._active, size)
                    raw = struct.pack("<5sIQ", _CLEAN_MAGIC, self._active, size)
                    raw += struct.pack("<I", zlib.crc32(raw))
                    tmp = self._packs_dir / "CLEAN.tmp"
                    tmp.write_bytes(raw)
                    with open(tmp, "rb") as f:
                        os.fsync(f.fileno())
                    os.replace(tmp, self._packs_dir / "CLEAN")
                    fsync_folder(self._packs_dir)
            except OSError as e:
                raise StorageError(f"closing content store {self._root}: {e}") from e
            finally:
                self._release_fds()
                self._durable_cv.notify_all()

    def _release_fds(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = -1

    def __enter__(self) -> PackBlockStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("content store is closed")

    def _check_writable(self) -> None:
        """Raise unless puts are accepted now (lock held)."""
        if self._read_only:
            raise StorageError(f"content store {self._root} is open read-only")
        if self._closing:
            raise StorageError("content store is closed")
        if self._failed is not None:
            raise StorageError(
                "content store hit an I/O error earlier; reopen it to recover"
            ) from self._failed

    # ------------------------------------------------------------------ writing

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` as a UnixFS file; return its root CID once it is durable."""
        pending = self.put_nowait(data)
        pending.wait()
        return pending.cid

    def put_nowait(self, data: bytes | bytearray | memoryview) -> PendingPut:
        """Write ``data`` as a UnixFS file and start making it durable; do not wait for that.

        The syncer flushes right away; call ``wait()`` on the result before acknowledging
        the object to anyone. Until then its blocks are not visible to ``get``/``has``.
        """
        self._check_open()
        dag = build_dag(data)
        return PendingPut(self, dag.root_str, self._submit(dag.blocks, hand_off=True))

    def put_many_nowait(
        self, objects: Sequence[bytes | bytearray | memoryview]
    ) -> list[PendingPut]:
        """``put_nowait`` of several objects in one append, so one flush covers them all.

        Two ``put_nowait`` calls in a row cost two flushes: the first hands off to the syncer,
        whose flush has started before the second appends. Ingest stores an instance and its
        header object together; each returned put waits for the whole append.
        """
        self._check_open()
        dags = [build_dag(data) for data in objects]
        need = self._submit([b for dag in dags for b in dag.blocks], hand_off=True)
        return [PendingPut(self, dag.root_str, dict(need)) for dag in dags]

    def _put_blocks(self, blocks: Sequence[tuple[bytes, BlockData]]) -> None:
        """Append the blocks not yet stored, then return only when all of them are durable."""
        self._wait_durable(self._submit(blocks))

    def _submit(
        self, blocks: Sequence[tuple[bytes, BlockData]], *, hand_off: bool = False
    ) -> dict[int, int]:
        """Append the blocks not yet stored; return {pack id: end} that must become durable.

        Blocks already pending (written by another put, not yet flushed) are not written
        again, but their end is part of what this put waits for. With ``hand_off``, see
        ``_hand_off``.
        """
        if self._read_only:
            raise StorageError(f"content store {self._root} is open read-only")
        # Dedupe candidates are re-checked outside the lock: a rotted copy gets rewritten.
        bad: set[bytes] = set()
        for cid, _ in blocks:
            loc = self._index.get(cid)
            if loc is not None and self._read_at(cid, loc, check=True) is None:
                bad.add(cid)
        while True:
            with self._lock:
                full = self._try_append(blocks, bad)
                if isinstance(full, dict):
                    if hand_off and full:
                        self._hand_off()
                    return full
            self._rotate(full)  # outside _lock: sealing takes _io_lock first

    def _hand_off(self) -> None:
        """(Lock held, just appended.) If the syncer is parked, wait until it starts the flush.

        Why: the syncer needs the GIL for a few bytecodes between being notified and
        entering fdatasync. If put_nowait returned at once and the caller went on running
        Python (building SQL rows), the syncer could get the GIL only when the caller blocks
        in wait(): no overlap at all. Blocking here for the thread switch (tens of
        microseconds) lets the flush start first. Not when the syncer is busy (the next
        flush starts when the current one ends) or held up by a runway chunk; bounded by a
        short timeout for anything else that holds the flush lock (sealing).
        """
        if not self._syncer_idle:
            return
        ticket = self._flushes_started
        deadline = time.monotonic() + 0.005
        while (
            self._flushes_started == ticket
            and not self._extending
            and self._failed is None
            and not self._closing
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._started_cv.wait(left)

    def _try_append(
        self, blocks: Sequence[tuple[bytes, BlockData]], bad: set[bytes]
    ) -> dict[int, int] | int:
        """(Lock held.) Append what is new and return what to wait for, or the id of the
        active pack if it must be sealed first (the caller seals it and tries again).

        If the records would run past the zeroed runway while the extender is writing the
        next chunk of it, wait for that chunk (at most one: the extender pauses while a put
        is blocked), then decide again: the state may have changed meanwhile.
        """
        blocked = False
        try:
            while True:
                self._check_writable()
                need: dict[int, int] = {}
                seen: set[bytes] = set()
                new: list[tuple[bytes, BlockData]] = []
                for cid, block in blocks:
                    if cid in seen:
                        continue
                    seen.add(cid)
                    if cid in self._index and cid not in bad:
                        continue
                    pending = self._pending.get(cid)
                    if pending is not None:
                        need[pending.pack] = max(need.get(pending.pack, 0), pending.end)
                        continue
                    new.append((cid, block))
                if not new:
                    return need
                total = sum(_HDR_SIZE + len(cid) + len(block) for cid, block in new)
                pack_id = self._active
                size = self._sizes[pack_id]
                if size > 0 and size + total > self._pack_max:
                    return pack_id
                if size + total > self._alloc_end and self._extending:
                    if not blocked:
                        blocked = True
                        self._blocked_appenders += 1
                    self._durable_cv.wait()
                    continue
                need[pack_id] = max(need.get(pack_id, 0), self._append(new))
                self._work_cv.notify()
                return need
        finally:
            if blocked:
                self._blocked_appenders -= 1
                self._extend_cv.notify()

    def _append(self, blocks: Sequence[tuple[bytes, BlockData]]) -> int:
        """Write records for ``blocks`` at the logical end of the active pack (lock held).

        Returns the new logical end. Past ``_alloc_end`` this is a plain append (no runway
        left); no extension is in flight then, so nothing else writes there.
        """
        pack_id = self._active
        fd = self._fds[pack_id]
        start = self._sizes[pack_id]
        buffers: list[BlockData] = []
        locs: list[tuple[bytes, _Loc]] = []
        pos = start
        for cid, block in blocks:
            header = _header(cid, len(block))
            buffers.append(header)
            buffers.append(block)
            data_off = pos + len(header)
            pos = data_off + len(block)
            locs.append((cid, _Loc(pack_id, data_off, len(block), pos)))
        try:
            _pwrite_all(fd, buffers, start)
        except OSError as e:
            # Nothing was acknowledged. Undo the partial record so the next one follows the
            # last good record and no stray bytes sit in the runway: zero it where it was
            # runway, cut the file where it was an append. If even that fails, stop.
            try:
                if pos <= self._alloc_end:
                    _write_zeros(fd, start, pos)
                else:
                    os.ftruncate(fd, start)
                    self._alloc_end = min(self._alloc_end, start)
            except OSError as e2:
                self._poison(e2)
            raise StorageError(f"writing to {self._pack_path(pack_id).name}: {e}") from e
        self._sizes[pack_id] = pos
        self._alloc_end = max(self._alloc_end, pos)
        self._last_activity = time.monotonic()
        self._active_entries.extend(locs)
        for cid, loc in locs:
            self._pending[cid] = loc
        return pos

    def _wait_durable(self, need: dict[int, int]) -> None:
        """Block until every pack in ``need`` is durable up to its end (the syncer works)."""
        with self._lock:
            while True:
                if all(self._synced.get(p, 0) >= end for p, end in need.items()):
                    return
                if self._failed is not None:
                    raise StorageError(
                        "content store hit an I/O error; the put is not durable; reopen the"
                        " store to recover"
                    ) from self._failed
                if self._closed:
                    raise StorageError("content store closed before the put was durable")
                self._durable_cv.wait()

    def _dirty(self) -> bool:
        """(Lock held.) Whether the active pack has appends not yet flushed.

        Only the active pack can: sealing flushes a pack before the next one is started.
        """
        return self._sizes.get(self._active, 0) > self._synced.get(self._active, 0)

    def _sync_loop(self) -> None:
        """Syncer thread: flush whenever there are unsynced appends; leave on close when clean.

        Group commit: appends made while a flush runs are covered by the next one, so under
        load each flush covers several puts and flushes run back to back.
        """
        try:
            while True:
                with self._lock:
                    while self._failed is None and not self._dirty():
                        if self._closing:
                            return
                        self._syncer_idle = True
                        self._work_cv.wait()
                        self._syncer_idle = False
                    if self._failed is not None:
                        return
                self._flush_active()
        except StorageError:
            return  # the store is poisoned; waiters were woken with the error
        except BaseException as e:  # never leave waiters hanging on a dead syncer
            with self._lock:
                self._poison(e)
            raise

    def _flush_active(self) -> None:
        """fdatasync the active pack if it has unsynced appends; publish what it covered."""
        with self._io_lock:
            with self._lock:
                if self._failed is not None:
                    return
                pack_id = self._active
                target = self._sizes[pack_id]
                if self._synced[pack_id] >= target:
                    return
                self._flushes_started += 1
                self._started_cv.notify_all()
            self._sync_fd(pack_id, target)
            with self._lock:
                self._last_activity = time.monotonic()

    def _sync_fd(self, pack_id: int, target: int) -> None:
        """fdatasync a pack, then publish pending blocks up to ``target`` into the index.

        ``target`` must have been read before the fdatasync started. Callers hold _io_lock.
        """
        try:
            _fdatasync(self._fds[pack_id])
        except OSError as e:
            with self._lock:
                self._poison(e)
            raise StorageError(f"flushing {self._pack_path(pack_id).name}: {e}") from e
        with self._lock:
            self._synced[pack_id] = max(self._synced[pack_id], target)
            done = [
                cid
                for cid, loc in self._pending.items()
                if loc.pack == pack_id and loc.end <= target
            ]
            for cid in done:
                self._index[cid] = self._pending.pop(cid)
            self._durable_cv.notify_all()
            self._extend_cv.notify()

    def _poison(self, error: BaseException) -> None:
        """(Lock held.) Refuse all further puts; fail everyone waiting for a flush.

        After a failed fdatasync nothing unsynced can be trusted (the kernel may have dropped
        those dirty pages), so pending blocks are forgotten and never published.
        """
        if self._failed is None:
            self._failed = error
        self._pending.clear()
        for cv in (self._work_cv, self._extend_cv, self._durable_cv):
            cv.notify_all()

    # ------------------------------------------------------------------ runway

    def _extend_wait(self) -> float | None:
        """(Lock held.) 0 if a runway chunk should be written now, else how long to wait.

        None means "until notified". Data waiting to be flushed and puts waiting for the
        runway come first; the runway ends at ``pack_max_bytes`` (records past it go to the
        next pack). Zeroing costs more disk time than it saves, so it must use idle time:
        only after ``_RUNWAY_IDLE`` without appends or data flushes. At a modality's pace
        (a put every ~8 ms) that leaves most of each gap; flat out it never happens and puts
        append, as without a runway, instead of queueing behind chunks of zeros.
        """
        if self._dirty() or self._blocked_appenders or self._extending:
            return None
        goal = min(self._sizes[self._active] + self._runway, self._pack_max)
        if self._alloc_end >= goal:
            return None
        now = time.monotonic()
        return max(0.0, self._extend_retry_at - now, self._last_activity + _RUNWAY_IDLE - now)

    def _extend_loop(self) -> None:
        """Extender thread: keep the active pack zeroed ``runway_bytes`` ahead, a chunk a time."""
        while True:
            with self._lock:
                while True:
                    if self._closing or self._failed is not None:
                        return
                    delay = self._extend_wait()
                    if delay == 0:
                        break
                    self._extend_cv.wait(delay)
            try:
                self._extend_chunk()
            except StorageError:
                return  # fdatasync failed: the store is poisoned
            except BaseException as e:
                with self._lock:
                    self._poison(e)
                raise

    def _extend_chunk(self) -> None:
        """Write and fdatasync the next chunk of zeros after ``_alloc_end``.

        Holds _io_lock throughout, so no data flush runs meanwhile; the fdatasync also
        covers every append made before it, so those blocks are published like after a
        syncer flush. A write error (ENOSPC) undoes the partial extension and rests the
        extender for a while; puts then append, until the disk is really full.
        """
        with self._io_lock:
            with self._lock:
                if self._closing or self._failed is not None or self._extend_wait() != 0:
                    return
                pack_id = self._active
                fd = self._fds[pack_id]
                start = self._alloc_end
                # Whole, aligned chunks (may overshoot the goal by less than one): zeroing
                # just what the last put used would cost a journal commit per put.
                stop = min(self._pack_max, (start // _RUNWAY_CHUNK + 1) * _RUNWAY_CHUNK)
                self._extending = stop
            extended = False
            try:
                try:
                    _write_zeros(fd, start, stop)
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)  # give the space back to the records
                    log.warning(
                        "content store: cannot extend %s (%s); puts append until it works",
                        self._pack_path(pack_id).name,
                        e,
                    )
                    with self._lock:
                        self._extend_retry_at = time.monotonic() + _RUNWAY_RETRY
                    return
                with self._lock:
                    target = self._sizes[pack_id]
                self._sync_fd(pack_id, target)
                extended = True
            finally:
                with self._lock:
                    if extended:
                        self._alloc_end = max(self._alloc_end, stop)
                    self._extending = 0
                    self._durable_cv.notify_all()

    def import_car(self, source: BinaryIO) -> list[str]:
        """Store every block of a CARv1 (each checked against its CID); return its roots.

        Blocks with CIDs this store cannot verify (not CIDv1 sha2-256) are refused, and so
        are blocks over 8 MiB (IPFS itself moves at most 2 MiB blocks).
        """
        car = read_car(source)
        for cid, block in car.blocks:
            try:
                decode_cid(cid)
            except ValueError as e:
                raise InvalidInputError(f"CAR block with unusable CID: {e}") from e
            if len(cid) > _MAX_CID_LEN or len(block) > _MAX_BLOCK:
                # A record the open-time scan would take for garbage must never be written.
                raise InvalidInputError(
                    f"CAR block {cid_to_str(cid)} is {len(block)} bytes; at most {_MAX_BLOCK}"
                )
            if not block_matches(cid, block):
                raise IntegrityError(f"CAR block {cid_to_str(cid)} does not match its CID")
        self._put_blocks(car.blocks)
        return [cid_to_str(c) for c in car.roots]

    # ------------------------------------------------------------------ reading

    def _read_at(self, cid: bytes, loc: _Loc, *, check: bool) -> bytes | None:
        """Read a block; with ``check``, None if it does not match its CID."""
        try:
            data = os.pread(self._fds[loc.pack], loc.length, loc.offset)
        except (OSError, KeyError) as e:
            if self._closed:
                raise StorageError("content store is closed") from e
            raise StorageError(f"reading block {cid_to_str(cid)}: {e}") from e
        if len(data) != loc.length or (check and not block_matches(cid, data)):
            return None
        return data

    def _read_block(self, cid: bytes) -> bytes:
        loc = self._index.get(cid)
        if loc is None and self._read_only:
            try:
                self._refresh()
            except OSError as e:
                raise StorageError(f"re-reading content store {self._root}: {e}") from e
            loc = self._index.get(cid)
        if loc is None:
            raise NotFoundError(f"block {cid_to_str(cid)} is not in the content store")
        data = self._read_at(cid, loc, check=True)
        if data is None:
            raise IntegrityError(f"block {cid_to_str(cid)} does not match its CID")
        return data

    def get_block(self, cid: str) -> bytes:
        """One block's bytes, checked against its CID."""
        self._check_open()
        return self._read_block(cid_from_str(cid))

    def get(self, cid: str) -> bytes:
        """Reassemble a UnixFS file, every block checked against its CID on the way."""
        self._check_open()
        parts: list[bytes] = []
        self._walk_file(cid_from_str(cid), parts, 0)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def open(self, cid: str) -> Iterator[bytes]:
        """Stream a UnixFS file block by block, each checked against its CID before any of
        its bytes is yielded.

        Memory is one leaf (256 KiB) plus the parents on the path to it, whatever the
        object's size. A missing or damaged block raises NotFoundError / IntegrityError when
        the walk reaches it, after the blocks before it were yielded: the caller must treat
        a read that raises as a failed read of the whole object. The CID is parsed before
        the first ``next`` (the generator is created lazily, so this checks it eagerly).
        """
        self._check_open()
        return self._stream_file(cid_from_str(cid), 0)

    def _stream_file(self, cid: bytes, depth: int) -> Generator[bytes, None, int]:
        """Yield the file bytes under ``cid``; return how many. ``yield from`` (not a loop
        variable) passes leaves up, so no frame keeps a leaf alive while the next is read."""
        if depth > 32:
            raise IntegrityError(f"DAG under {cid_to_str(cid)} is implausibly deep")
        block = self._read_block(cid)
        codec = decode_cid(cid).codec
        if codec == CODEC_RAW:
            size = len(block)
            yield block
            return size
        meta, links = self._file_node(cid, block)
        del block
        total = len(meta.data)
        if meta.data:
            yield meta.data
        sizes: list[int | None] = list(meta.blocksizes) if meta.blocksizes else [None] * len(links)
        for link, expected in zip(links, sizes, strict=True):
            got = yield from self._stream_file(link, depth + 1)
            # Checked per link, not only at the end, so a short child is named where it is.
            if expected is not None and got != expected:
                raise IntegrityError(
                    f"{cid_to_str(cid)} says {expected} bytes under a link, it holds {got}"
                )
            total += got
        if meta.filesize is not None and meta.filesize != total:
            raise IntegrityError(
                f"{cid_to_str(cid)} declares {meta.filesize} bytes but holds {total}"
            )
        return total

    def open_range(self, cid: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` of a UnixFS file, reading only the blocks that hold them
        (and the parents on the way), each checked against its CID; subtrees outside the
        range are skipped by the parents' block sizes. Why: a frame of a large multi-frame
        instance is a few segments of a big object (WADO-RS frames)."""
        self._check_open()
        if start < 0 or end < start:
            raise InvalidInputError(f"invalid byte range {start}..{end}")
        return self._range(cid_from_str(cid), start, end, None, 0)

    def _range(
        self, cid: bytes, start: int, end: int, size: int | None, depth: int
    ) -> Iterator[bytes]:
        if depth > 32:
            raise IntegrityError(f"DAG under {cid_to_str(cid)} is implausibly deep")
        block = self._read_block(cid)
        if decode_cid(cid).codec == CODEC_RAW:
            if size is not None and len(block) != size:
                raise IntegrityError(f"{cid_to_str(cid)} holds {len(block)} bytes, not {size}")
            if start < len(block):
                yield block[start:end]
            return
        meta, links = self._file_node(cid, block)
        del block
        pos = len(meta.data)
        if meta.data and start < pos:
            yield meta.data[start:end]
        if links and len(meta.blocksizes) != len(links):
            raise IntegrityError(f"{cid_to_str(cid)} has no block sizes to seek by")
        for link, child in zip(links, meta.blocksizes, strict=False):
            if pos >= end:
                break
            if pos + child > start:
                yield from self._range(
                    link, max(0, start - pos), min(child, end - pos), child, depth + 1
                )
            pos += child

    def _file_node(self, cid: bytes, block: bytes) -> tuple[UnixFSData, list[bytes]]:
        """A dag-pb block's UnixFS file metadata and child CIDs; IntegrityError otherwise."""
        codec = decode_cid(cid).codec
        if codec != CODEC_DAG_PB:
            raise IntegrityError(f"block {cid_to_str(cid)} has codec 0x{codec:x}, not a file")
        try:
            node = decode_dag_pb(block)
            if node.data is None:
                raise ValueError("dag-pb node without UnixFS Data")
            meta = decode_unixfs(node.data)
        except (ValueError, UnicodeDecodeError) as e:
            raise IntegrityError(f"block {cid_to_str(cid)} is not a UnixFS node: {e}") from e
        if meta.type not in (UNIXFS_FILE, UNIXFS_RAW):
            raise IntegrityError(f"{cid_to_str(cid)} is UnixFS type {meta.type}, not a file")
        if meta.blocksizes and len(meta.blocksizes) != len(node.links):
            raise IntegrityError(f"{cid_to_str(cid)}: blocksizes do not match its links")
        return meta, [link.cid for link in node.links]

    def _walk_file(self, cid: bytes, out: list[bytes], depth: int) -> int:
        """Append the file bytes under ``cid`` to ``out``; return how many."""
        if depth > 32:
            raise IntegrityError(f"DAG under {cid_to_str(cid)} is implausibly deep")
        block = self._read_block(cid)
        codec = decode_cid(cid).codec
        if codec == CODEC_RAW:
            out.append(block)
            return len(block)
        meta, links = self._file_node(cid, block)
        total = 0
        if meta.data:
            out.append(meta.data)
            total += len(meta.data)
        for link in links:
            total += self._walk_file(link, out, depth + 1)
        if meta.filesize is not None and meta.filesize != total:
            raise IntegrityError(
                f"{cid_to_str(cid)} declares {meta.filesize} bytes but holds {total}"
            )
        return total

    def has(self, cid: str) -> bool:
        """Whether the root block of ``cid`` is durably stored (False for a malformed CID)."""
        self._check_open()
        try:
            raw = cid_from_str(cid)
        except InvalidInputError:
            return False
        if raw not in self._index and self._read_only:
            with contextlib.suppress(OSError):
                self._refresh()
        return raw in self._index

    def complete(self, cid: str) -> bool:
        """Whether every block reachable from ``cid`` is stored; leaves are not read.

        After a crash the pack's torn tail is gone; a row committed just before (its flush
        still running, so never acknowledged) may name blocks that went with it.
        """
        self._check_open()
        try:
            root = cid_from_str(cid)
        except InvalidInputError:
            return False
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            block_cid = stack.pop()
            if block_cid in seen:
                continue
            seen.add(block_cid)
            if block_cid not in self._index:
                return False
            if decode_cid(block_cid).codec != CODEC_DAG_PB:
                continue
            try:
                links = decode_dag_pb(self._read_block(block_cid)).links
            except (ZtbridgeError, ValueError, UnicodeDecodeError):
                return False
            stack.extend(link.cid for link in links)
        return True

    def _walk_blocks(self, roots: Sequence[bytes]) -> Iterator[tuple[bytes, bytes]]:
        """Every block reachable from ``roots``, once each, root first, depth first."""
        seen: set[bytes] = set()
        stack = list(reversed(roots))
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            block = self._read_block(cid)
            yield cid, block
            if decode_cid(cid).codec == CODEC_DAG_PB:
                try:
                    links = decode_dag_pb(block).links
                except (ValueError, UnicodeDecodeError) as e:
                    raise IntegrityError(f"block {cid_to_str(cid)} is not dag-pb: {e}") from e
                stack.extend(link.cid for link in reversed(links))

    def export_car(self, roots: Iterable[str], out: BinaryIO) -> int:
        """Write a CARv1 of everything reachable from ``roots``; return blocks written.

        Blocks are checked as they are read; a missing or bad one raises NotFoundError or
        IntegrityError part-way, so write to a temporary file and rename on success.
        """
        self._check_open()
        root_cids = [cid_from_str(r) for r in roots]
        return write_car(out, root_cids, self._walk_blocks(root_cids))

    # ------------------------------------------------------------------ checking

    def verify(self) -> Iterator[StoreProblem]:
        """Re-read every record of every pack; yield what is wrong.

        Reported: blocks whose bytes do not match their CID, damaged record headers (the
        rest of that pack cannot be read), dag-pb nodes linking to blocks that are not
        stored, problems found when the store was opened, and torn tails kept in
        ``quarantine/``. Runs alongside puts: the active pack is checked up to what was
        durable when verify reached it.
        """
        self._check_open()
        yield from self._open_problems
        with self._lock:
            packs = sorted(self._fds)
        missing_children: list[tuple[bytes, bytes]] = []
        for pack_id in packs:
            with self._lock:
                size = self._synced[pack_id]
                fd = self._fds.get(pack_id)
            if fd is None:
                break  # closed meanwhile
            pos = 0
            name = self._pack_path(pack_id).name
            while pos < size:
                scan = self._scan_one(fd, pack_id, pos, size)
                if isinstance(scan, str):
                    yield StoreProblem("", f"{name}: {scan} at offset {pos}; rest unreadable")
                    break
                cid, loc, data = scan
                if not block_matches(cid, data):
                    yield StoreProblem(
                        cid_to_str(cid), f"block does not match its CID ({name} @{pos})"
                    )
                elif cid[1] == CODEC_DAG_PB:  # CIDv1: byte 1 is the (one-byte) codec
                    try:
                        for link in decode_dag_pb(data).links:
                            missing_children.append((cid, link.cid))
                    except (ValueError, UnicodeDecodeError) as e:
                        yield StoreProblem(cid_to_str(cid), f"malformed dag-pb node: {e}")
                pos = loc.end
        for parent, child in missing_children:
            if child not in self._index:
                yield StoreProblem(
                    cid_to_str(parent), f"links to block {cid_to_str(child)}, which is missing"
                )
        if self._quarantine_dir.is_dir():
            for path in sorted(self._quarantine_dir.iterdir()):
                yield StoreProblem(
                    "",
                    f"quarantine/{path.name}: torn pack tail cut away after a crash; nothing"
                    " acknowledged was in it; inspect and delete",
                )

    def _scan_one(
        self, fd: int, pack_id: int, pos: int, size: int
    ) -> tuple[bytes, _Loc, bytes] | str:
        """Read the whole record at ``pos``; a string says why it is not a valid record."""
        try:
            head = os.pread(fd, _SCAN_READ, pos)
        except OSError as e:
            return f"read error {e}"
        if len(head) < _HDR_SIZE:
            return "truncated record header"
        magic, cid_len, length, crc = _HDR.unpack_from(head, 0)
        if magic != _MAGIC or not 0 < cid_len <= _MAX_CID_LEN or length > _MAX_BLOCK:
            return "bad record header"
        end = pos + _HDR_SIZE + cid_len + length
        if end > size:
            return "record runs past the end of the pack"
        record = os.pread(fd, end - pos, pos)
        if len(record) != end - pos:
            return "pack shorter than expected"
        cid = record[_HDR_SIZE : _HDR_SIZE + cid_len]
        if crc != zlib.crc32(cid, zlib.crc32(struct.pack("<BI", cid_len, length))):
            return "record header checksum mismatch"
        data_off = pos + _HDR_SIZE + cid_len
        return cid, _Loc(pack_id, data_off, length, end), record[_HDR_SIZE + cid_len :]
