"""The anchoring backlog as an operator reads it: what waits, the last anchor, and the lag.

The same counts ``ztbridge status`` prints (``outbox_counts``), plus when the newest anchor
landed and how long the oldest pending batch has waited: the admin's "pending anchors" page.
Read from the index only (the outbox is written in the same commits as what it anchors), so
the page costs no chain call and works while another process holds the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Table, func, select

from gateway.anchoring.outbox import ANCHORED, PENDING, OutboxCounts, outbox_counts
from gateway.index.database import Database
from gateway.index.models import anchor_batches, audit_anchors


@dataclass(frozen=True)
class LastAnchor:
    """The newest anchored batch (or audit range)."""

    anchored_at: str
    tx_hash: str | None
    block_number: int | None


@dataclass(frozen=True)
class Backlog:
    """Counts, the newest anchors, and the oldest pending batch's wait."""

    counts: OutboxCounts
    last_batch: LastAnchor | None
    last_audit: LastAnchor | None
    oldest_pending_at: str | None
    lag: timedelta | None  # how long the oldest pending batch has waited; None: nothing waits


def _last(db: Database, t: Table) -> LastAnchor | None:
    """The newest anchored row of ``t`` (anchor_batches or audit_anchors: both carry the
    anchored_* columns)."""
    with db.read() as conn:
        row = conn.execute(
            select(t.c.anchored_at, t.c.tx_hash, t.c.block_number)
            .where(t.c.state == ANCHORED)
            .order_by(t.c.anchored_at.desc())
            .limit(1)
        ).first()
    if row is None or row.anchored_at is None:
        return None
    return LastAnchor(row.anchored_at, row.tx_hash, row.block_number)


def backlog(db: Database, now: datetime) -> Backlog:
    """The anchoring backlog at ``now``."""
    with db.read() as conn:
        oldest = conn.execute(
            select(func.min(anchor_batches.c.created_at)).where(anchor_batches.c.state == PENDING)
        ).scalar()
    lag = None
    if oldest is not None:
        lag = max(timedelta(0), now - datetime.fromisoformat(oldest))
    return Backlog(
        outbox_counts(db), _last(db, anchor_batches), _last(db, audit_anchors), oldest, lag
    )
