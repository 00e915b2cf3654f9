"""The DICOM edge limits that need no network: PDU caps, the pending pool, oversize sink."""

from __future__ import annotations

import pynetdicom
import pytest

from dicom_scp.guard import Limits, Oversized, PendingConnections, check_pynetdicom

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


def test_pending_pool_drops_the_oldest() -> None:
    closed: list[int] = []
    pool = PendingConnections(3)
    for i in range(5):
        pool.add(i, lambda i=i: closed.append(i))  # type: ignore[misc]
    assert closed == [0, 1] and len(pool) == 3 and pool.evicted == 2
    pool.discard(2)
    pool.discard(2)  # idempotent
    pool.add(9, lambda: closed.append(9))
    assert closed == [0, 1] and len(pool) == 3


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
