"""Append-only, hash-chained audit log.

Each entry's hash covers its own fields and the previous entry's hash, so editing,
reordering or deleting an entry breaks every link after it; the head row (last seq + hash)
is updated in the same transaction, so a truncated tail shows too. Appends join the caller's
transaction: an instance row and the event saying it was stored commit together or not at all.
Verification is a pure function over the entries (no I/O), tested with tables of cases.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from gateway import metrics
from gateway.clock import Clock
from gateway.index.database import Database, Tx
from gateway.index.models import audit_events, audit_head

GENESIS = "0" * 64
_HEAD = select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)
_HEAD_FOR_UPDATE = _HEAD.with_for_update()
_INSERT_EVENT = insert(audit_events)
_INSERT_HEAD = insert(audit_head)
_MOVE_HEAD = (
    update(audit_head)
    .where(audit_head.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)
log = logging.getLogger("ztbridge.audit")


@dataclass(frozen=True)
class AuditEvent:
    """Something that happened and who made it happen.

    ``kind`` is a dotted verb such as ``association.accepted`` or ``instance.stored``;
    ``outcome`` is ``ok`` / ``refused`` / ``error``.
    """

    kind: str
    actor: str
    subject: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditEntry:
    """An event as stored: with its place in the chain."""

    seq: int
    ts: str
    kind: str
    actor: str
    subject: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str


def entry_hash(
    seq: int, ts: str, kind: str, actor: str, subject: str, outcome: str, detail: str, prev: str
) -> str:
    """SHA-256 over a canonical JSON array of the entry's fields and the previous hash."""
    canonical = json.dumps(
        [seq, ts, kind, actor, subject, outcome, detail, prev],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    """The first place where the chain does not hold."""

    seq: int
    problem: str


def verify_chain(
    entries: Iterable[AuditEntry], head: tuple[int, str] | None
) -> ChainProblem | None:
    """Walk the chain in storage order; name the first edited, reordered or missing entry."""
    expected_seq, prev = 1, GENESIS
    for e in entries:
        if e.seq != expected_seq:
            if e.seq > expected_seq:
                return ChainProblem(expected_seq, f"entry {expected_seq} is missing")
            return ChainProblem(e.seq, f"entry {e.seq} is out of order")
        if e.prev_hash != prev:
            return ChainProblem(
                e.seq, f"entry {e.seq} does not follow entry {e.seq - 1} (reordered or replaced)"
            )
        recomputed = entry_hash(
            e.seq, e.ts, e.kind, e.actor, e.subject, e.outcome, e.detail, e.prev_hash
        )
        if recomputed != e.hash:
            return ChainProblem(e.seq, f"entry {e.seq} was edited (hash mismatch)")
        expected_seq, prev = expected_seq + 1, e.hash
    last = expected_seq - 1
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last:
            return ChainProblem(last + 1, f"entries {last + 1}..{head_seq} are missing (tail cut)")
        if head_seq < last or head_hash != prev:
            return ChainProblem(head_seq, "the chain head does not match the last entry")
    elif last > 0:
        return ChainProblem(last, "the chain head record is missing")
    return None


class AuditLog:
    """Writes events into the chain; reads it back for verification."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def append(self, conn: Tx, event: AuditEvent) -> int:
        """Add ``event`` inside the caller's transaction; return its sequence number."""
        head = conn.execute(_HEAD if self._db.is_sqlite else _HEAD_FOR_UPDATE, {}).first()
        seq, prev = (head.seq + 1, head.hash) if head else (1, GENESIS)
        ts = self._clock.now().isoformat(timespec="microseconds")
        detail = json.dumps(event.detail, sort_keys=True, separators=(",", ":"), default=str)
        digest = entry_hash(
            seq, ts, event.kind, event.actor, event.subject, event.outcome, detail, prev
        )
        conn.execute(
            _INSERT_EVENT,
            {
                "seq": seq,
                "ts": ts,
                "kind": event.kind,
                "actor": event.actor,
                "subject": event.subject,
                "outcome": event.outcome,
                "detail": detail,
                "prev_hash": prev,
                "hash": digest,
            },
        )
        if head:
            conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": digest})
        else:
            conn.execute(_INSERT_HEAD, {"id": 1, "seq": seq, "hash": digest})
        metrics.observe(event)
        log.debug(
            "audit %s %s actor=%s subject=%s %s",
            event.kind,
            event.outcome,
            event.actor,
            event.subject,
            detail,
        )
        return seq

    def record(self, event: AuditEvent) -> int:
        """Append ``event`` in a transaction of its own."""
        with self._db.write() as conn:
            return self.append(conn, event)

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry in sequence order."""
        with self._db.read() as conn:
            for row in conn.execute(select(audit_events).order_by(audit_events.c.seq)):
                yield AuditEntry(**row._asdict())

    def recent(self, before: int | None = None, limit: int = 50) -> list[AuditEntry]:
        """A page of entries, newest first, those before sequence number ``before`` (all when
        None): paged by position in the chain, so events appended meanwhile (reading the
        page is one) never shift a page."""
        query = select(audit_events).order_by(audit_events.c.seq.desc()).limit(max(1, limit))
        if before is not None:
            query = query.where(audit_events.c.seq < before)
        with self._db.read() as conn:
            return [AuditEntry(**row._asdict()) for row in conn.execute(query)]

    def head(self) -> tuple[int, str] | None:
        """The recorded head of the chain."""
        with self._db.read() as conn:
            row = conn.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
        return (row.seq, row.hash) if row else None

    def verify(self) -> ChainProblem | None:
        """Check the stored chain; None when it holds."""
        return verify_chain(self.entries(), self.head())
