"""The DICOM edge limits that need no network: PDU caps, the pending pool, oversize sink."""

from __future__ import annotations

import copy
import resource
import socket

import pynetdicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.presentation import build_context, negotiate_as_acceptor

from dicom_scp import fdlimit
from dicom_scp.contexts import VERIFICATION as VERIFY
from dicom_scp.contexts import storage_contexts, verification_context
from dicom_scp.guard import Limits, Oversized, SharedContexts, check_pynetdicom
from dicom_scp.lobby import Pending, PendingConnections

LIMITS = Limits(
    max_pdu_bytes=262144,
    max_associate_rq_bytes=65536,
    max_dataset_bytes=1 << 20,
    io_timeout=60,
    handshake_timeout=10,
)


@pytest.mark.parametrize(
    ("pdu_type", "cap"),
    [(1, 65536), (2, 65536), (3, 65536), (4, 262144), (5, 4), (6, 4), (7, 4), (8, None), (0, None)],
)
def test_pdu_caps(pdu_type: int, cap: int | None) -> None:
    assert LIMITS.pdu_cap(pdu_type) == cap


class FakeSocket:
    """Records the hang-up a pool eviction does (no real socket needed for the bookkeeping)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shut = False

    def shutdown(self, how: int) -> None:
        self.shut = True

    def recv(self, size: int, flags: int = 0) -> bytes:
        raise BlockingIOError  # silent: nothing has arrived


def entry(name: str, ip: str = "10.0.0.1", spoke: bool = False) -> Pending:
    return Pending(FakeSocket(name), ip, spoke)  # type: ignore[arg-type]


def hung_up(*items: Pending) -> list[str]:
    return [i.sock.name for i in items if i.sock.shut]  # type: ignore[attr-defined]


def pool_of(
    silent: int, silent_per_ip: int, spoken: int = 32, spoken_per_ip: int = 32
) -> PendingConnections:
    return PendingConnections(spoken, spoken_per_ip, silent, silent_per_ip)


def test_pending_pool_drops_the_oldest_silent_connection() -> None:
    pool = pool_of(3, 10)
    items = [entry(str(i)) for i in range(5)]
    for item in items:
        pool.add(item)
    assert hung_up(*items) == ["0", "1"] and len(pool) == 3 and pool.evicted == 2
    pool.discard(items[2])
    pool.discard(items[2])  # idempotent
    late = entry("9")
    pool.add(late)
    assert hung_up(*items, late) == ["0", "1"] and len(pool) == 3


def test_silent_connections_never_push_out_one_that_spoke() -> None:
    pool = pool_of(3, 3, spoken=1, spoken_per_ip=1)
    modality = entry("modality", "10.9.9.9")
    pool.add(modality)
    pool.spoke(modality)  # its A-ASSOCIATE-RQ is on the way
    flood = [entry(f"f{i}", "10.9.9.9") for i in range(50)]
    for item in flood:
        pool.add(item)
    assert modality in pool and not modality.sock.shut  # type: ignore[attr-defined]
    assert len(pool) == 4 and pool.count("10.9.9.9") == 4


def test_connections_that_spoke_have_their_own_smaller_caps() -> None:
    pool = pool_of(100, 100, spoken=3, spoken_per_ip=2)
    modality = entry("modality", "10.0.0.5")
    pool.add(modality)
    pool.spoke(modality)
    talkers = [entry(f"t{i}", "10.9.9.9") for i in range(10)]  # one byte each, then nothing
    for item in talkers:
        pool.add(item)
        pool.spoke(item)
    assert hung_up(modality, *talkers) == [f"t{i}" for i in range(8)]  # its own slots churn
    assert modality in pool and pool.count("10.9.9.9") == 2
    pool.spoke(modality)  # twice: no effect
    assert len(pool) == 3


def test_a_request_the_lobby_has_not_seen_yet_outlives_a_flood_from_its_address() -> None:
    """The accept thread takes connections in batches: a modality's A-ASSOCIATE-RQ can be
    waiting on a connection the lobby has not looked at when a flood from the same address
    pushes that address past its cap. The pool peeks before it drops (CI saw 1 of 5 echoes
    refused under a same-host flood when it judged by the lobby's flag alone)."""
    pool = pool_of(32, 2)
    pairs = [socket.socketpair() for _ in range(6)]
    try:
        ours, theirs = pairs[0]
        theirs.sendall(b"\x01")  # the first byte of an A-ASSOCIATE-RQ, not yet seen
        modality = Pending(ours, "10.0.0.5")
        pool.add(modality)
        flood = [Pending(sock, "10.0.0.5") for sock, _ in pairs[1:]]
        for item in flood:
            pool.add(item)
        assert modality in pool and modality.spoke
        assert ours.recv(1) == b"\x01"  # peeked, not consumed
        assert pool.count("10.0.0.5") == 3 and flood[-1] in pool and flood[-2] in pool
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_pending_pool_caps_each_address() -> None:
    pool = pool_of(32, 2)
    others = [entry(f"o{i}", f"10.0.0.{i}") for i in range(5)]
    for item in others:
        pool.add(item)
    flood = [entry(f"f{i}", "10.9.9.9") for i in range(100)]
    for item in flood:
        pool.add(item)
    assert hung_up(*others) == []  # one flooding host churns only its own slots
    assert pool.count("10.9.9.9") == 2 and len(pool) == 7
    assert flood[-1] in pool and flood[-2] in pool


def test_silent_caps_fit_the_open_file_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fdlimit.raise_open_file_limit() >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    monkeypatch.setattr(fdlimit, "raise_open_file_limit", lambda: 1024)
    assert fdlimit.silent_caps(100, 50) == (100, 50)
    assert fdlimit.silent_caps(4096, 1024) == (1024 - fdlimit.RESERVE,) * 2
    monkeypatch.setattr(fdlimit, "raise_open_file_limit", lambda: 256)
    assert fdlimit.silent_caps(1024, 256) == (16, 16)


def test_associations_share_the_contexts_and_negotiation_leaves_them_alone() -> None:
    contexts = SharedContexts([*storage_contexts(), verification_context()])
    before = [(c.abstract_syntax, list(c.transfer_syntax), c.context_id) for c in contexts]
    assert copy.deepcopy(contexts) is contexts
    requested = [build_context(CTImageStorage, [ExplicitVRLittleEndian]), build_context(VERIFY)]
    for i, cx in enumerate(requested):
        cx.context_id = 2 * i + 1
    result, _ = negotiate_as_acceptor(requested, contexts)
    assert [c.result for c in result] == [0, 0]
    assert [(c.abstract_syntax, list(c.transfer_syntax), c.context_id) for c in contexts] == before


def test_oversized_keeps_nothing() -> None:
    sink = Oversized(100)
    assert sink.write(b"x" * 5000) == 5000
    assert sink.received == 5100
    assert sink.getbuffer().nbytes == 0


def test_pynetdicom_version_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    check_pynetdicom()
    monkeypatch.setattr(pynetdicom, "__version__", "4.0.0")
    with pytest.raises(Exception, match="not supported"):
        check_pynetdicom()
