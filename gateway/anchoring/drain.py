"""Draining the outbox from the command line (``ztbridge chain drain``, ``ztbridge import``)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.anchoring.service import Anchoring
from gateway.ledger.errors import LedgerError


@dataclass(frozen=True)
class DrainResult:
    """Batches sealed and rows anchored; ``error`` says why anything is left pending."""

    sealed: int
    batches: int
    audit_ranges: int
    error: str | None


def drain(anchoring: Anchoring, *, seal_all: bool = True) -> DrainResult:
    """Seal every unbatched study (``seal_all``), then anchor everything pending, audit too.

    Needs the ledger lock: while ``ztbridge up`` runs, its worker does this by itself.
    Chain trouble is reported in the result (the rows stay pending), never raised.
    """
    sealed = len(anchoring.seal_due(force=True)) if seal_all else 0
    lock = anchoring.lock
    if not lock.acquire():
        return DrainResult(
            sealed,
            0,
            0,
            f"another ztbridge process (pid {lock.holder() or '?'}) holds the ledger; a"
            " running 'ztbridge up' anchors by itself ('ztbridge chain info' shows progress)",
        )
    try:
        session = anchoring.connect()
        try:
            report = anchoring.send_pending(session, force_audit=True)
        finally:
            session.close()
    except LedgerError as e:
        return DrainResult(sealed, 0, 0, str(e))
    finally:
        lock.release()
    return DrainResult(sealed, report.batches, report.audit_ranges, None)
