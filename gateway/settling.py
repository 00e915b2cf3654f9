"""The window between an instance row's COMMIT and its ciphertext becoming durable.

Why the window exists: an acknowledged instance needs two fsyncs, the pack's (the ciphertext)
and the index's (its row). Run one after the other they cost ~0.7 ms of every ~3.5 ms
instance on this class of disk, with the CPU idle; run at once, about half that. So ingest
commits the row while the pack flush is still running, and answers the modality only once
both are done. Nothing is acknowledged earlier than before; what changes is that for a moment
a committed row may name an object that is not yet durable, and three things must hold
through that moment:

* nobody else acknowledges on the strength of that row: a sender of an identical copy waits
  (``Settling.wait``) before its duplicate is answered;
* nothing is built on it: anchoring seals only rows below ``Settling.horizon``;
* a crash inside the window leaves no such row behind: every ingest transaction records
  ``settled_below`` (no row under it can be unsettled), and on the next start
  ``recover`` checks each row at or above it against the store and withdraws the ones whose
  object did not survive. They were never acknowledged; the sender, unanswered, sends them
  again.

A flush that fails after the COMMIT withdraws the row at once (``withdraw``) and the instance
is refused, as before.

One process writes a home (the store's lock); the registry is in memory for that reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update

from gateway.audit import AuditEvent, AuditLog
from gateway.index.database import Database, Tx
from gateway.index.models import instances, key_wraps, settling, study_keys
from gateway.index.qido import uncount_instance
from gateway.logsafe import shown
from gateway.store.base import ContentStore

log = logging.getLogger("ztbridge.ingest")

_SET_WATERMARK = update(settling).where(settling.c.id == 1).values(settled_below=bindparam("below"))
_WATERMARK = select(settling.c.settled_below).where(settling.c.id == 1)
_ABOVE = (
    select(
        instances.c.id,
        instances.c.sop_instance_uid,
        instances.c.version,
        instances.c.study_uid,
        instances.c.series_uid,
        instances.c.cid,
        instances.c.header_cid,
        instances.c.key_id,
    )
    .where(instances.c.id >= bindparam("below"))
    .order_by(instances.c.id)
)
_ROW = select(instances.c.id).where(instances.c.id == bindparam("id"))
_DELETE = delete(instances).where(instances.c.id == bindparam("id"))
_KEY_IN_USE = select(instances.c.id).where(instances.c.key_id == bindparam("key")).limit(1)
_DELETE_WRAPS = delete(key_wraps).where(key_wraps.c.key_id == bindparam("key"))
_DELETE_KEY = delete(study_keys).where(study_keys.c.key_id == bindparam("key"))
_MAX_ID = select(instances.c.id).order_by(instances.c.id.desc()).limit(1)

#: How many withdrawn ids are remembered for waiters (a withdrawal is a failing disk: rare).
_WITHDRAWN_KEPT = 1024


class Settling:
    """Instance rows committed whose objects are still being flushed, by instance id."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: set[int] = set()
        self._withdrawn: list[int] = []

    def open(self, instance_id: int) -> int:
        """(Inside the row's write transaction.) Register the row; return the watermark to
        record in that same transaction: the lowest id still unsettled."""
        with self._cond:
            self._open.add(instance_id)
            return min(self._open)

    def close(self, instance_id: int, *, durable: bool) -> None:
        """The row's object is durable (``durable``), or the row was withdrawn or rolled
        back; wake whoever waits on it."""
        with self._cond:
            self._open.discard(instance_id)
            if not durable:
                self._withdrawn.append(instance_id)
                del self._withdrawn[:-_WITHDRAWN_KEPT]
            self._cond.notify_all()

    def horizon(self) -> int | None:
        """The lowest unsettled id (rows from it on must not be built on yet); None: none."""
        with self._cond:
            return min(self._open) if self._open else None

    def wait(self, instance_id: int, timeout: float = 60.0) -> bool:
        """Wait until the row is settled; True when it is durable (or never was unsettled),
        False when it was withdrawn or did not settle in ``timeout`` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: instance_id not in self._open, timeout):
                return False
            return instance_id not in self._withdrawn


def record_watermark(conn: Tx, below: int) -> None:
    """Store ``settled_below`` in the caller's transaction."""
    conn.execute(_SET_WATERMARK, {"below": below})


@dataclass(frozen=True)
class Withdrawn:
    """An instance row removed because its object never became durable."""

    instance_id: int
    sop_instance_uid: str
    version: int
    study_uid: str
    key_id: str


def withdraw(conn: Tx, audit: AuditLog, row: Withdrawn, series_uid: str, reason: str) -> None:
    """Remove an unacknowledged instance row, undo its counts, drop its study key if no
    other row uses it (it was made for this instance), and audit why."""
    if conn.execute(_ROW, {"id": row.instance_id}).first() is None:
        return
    conn.execute(_DELETE, {"id": row.instance_id})
    if row.version == 1:
        uncount_instance(conn, row.study_uid, series_uid)
    if conn.execute(_KEY_IN_USE, {"key": row.key_id}).first() is None:
        conn.execute(_DELETE_WRAPS, {"key": row.key_id})
        conn.execute(_DELETE_KEY, {"key": row.key_id})
    audit.append(
        conn,
        AuditEvent(
            "instance.withdrawn",
            "ztbridge",
            row.sop_instance_uid,
            "error",
            {"version": row.version, "study": row.study_uid, "reason": reason},
        ),
    )


def recover(db: Database, store: ContentStore, audit: AuditLog) -> list[Withdrawn]:
    """At start, before any ingest: withdraw rows whose object did not survive a crash.

    Checks only rows at or above the recorded watermark (a handful after a crash, none after
    a clean stop), then moves the watermark past the last row.
    """
    with db.read() as conn:
        found = conn.execute(_WATERMARK).first()
        below = int(found.settled_below) if found is not None else 1
        rows = conn.execute(_ABOVE, {"below": below}).all()
        top = conn.execute(_MAX_ID).first()
    lost = [
        r
        for r in rows
        if not store.complete(r.cid)
        or (r.header_cid is not None and not store.complete(r.header_cid))
    ]
    gone: list[Withdrawn] = []
    next_below = (int(top.id) if top is not None else 0) + 1
    if not lost and below >= next_below:
        return gone
    with db.write() as conn:
        for r in lost:
            w = Withdrawn(int(r.id), r.sop_instance_uid, int(r.version), r.study_uid, r.key_id)
            withdraw(
                conn,
                audit,
                w,
                r.series_uid,
                "its ciphertext was not durable when the gateway stopped; it was never"
                " acknowledged, and the sender will send it again",
            )
            gone.append(w)
        record_watermark(conn, next_below)
    for w in gone:
        log.warning(
            "withdrew instance %s (study %s): stored when the gateway stopped but its"
            " ciphertext did not survive; it was never acknowledged",
            shown(w.sop_instance_uid),
            shown(w.study_uid),
        )
    return gone
