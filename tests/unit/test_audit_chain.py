"""The audit chain: every kind of tampering is named at the first entry it breaks."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from gateway.audit import GENESIS, AuditEntry, AuditEvent, AuditLog, entry_hash, verify_chain
from gateway.clock import FixedClock
from gateway.index.database import Database
from gateway.index.models import audit_events, audit_head


def _chain(n: int) -> list[AuditEntry]:
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        fields = (seq, f"2026-01-01T00:00:{seq:02d}", "k", "a", f"s{seq}", "ok", "{}")
        h = entry_hash(*fields, prev)
        entries.append(AuditEntry(*fields, prev, h))
        prev = h
    return entries


def _head(entries: list[AuditEntry]) -> tuple[int, str]:
    return entries[-1].seq, entries[-1].hash


def test_intact_chain() -> None:
    chain = _chain(5)
    assert verify_chain(chain, _head(chain)) is None
    assert verify_chain([], None) is None


def _edited(chain: list[AuditEntry]) -> list[AuditEntry]:
    c = list(chain)
    c[2] = dataclasses.replace(c[2], subject="changed")
    return c


def _swapped(chain: list[AuditEntry]) -> list[AuditEntry]:
    c = list(chain)
    a, b = c[1], c[2]
    c[1] = dataclasses.replace(b, seq=2)
    c[2] = dataclasses.replace(a, seq=3)
    return c


def _rehashed(chain: list[AuditEntry]) -> list[AuditEntry]:
    """An attacker edits entry 3 and recomputes its hash: entry 4's link breaks."""
    c = list(chain)
    e = dataclasses.replace(c[2], subject="changed")
    fields = (e.seq, e.ts, e.kind, e.actor, e.subject, e.outcome, e.detail, e.prev_hash)
    c[2] = dataclasses.replace(e, hash=entry_hash(*fields))
    return c


@pytest.mark.parametrize(
    ("case", "mutate", "head_from_original", "seq", "words"),
    [
        ("edited", _edited, True, 3, "edited"),
        ("edited and rehashed", _rehashed, True, 4, "does not follow"),
        ("reordered", _swapped, True, 2, "does not follow"),
        ("middle deleted", lambda c: c[:2] + c[3:], True, 3, "missing"),
        ("first deleted", lambda c: c[1:], True, 1, "missing"),
        ("tail cut", lambda c: c[:3], True, 4, "tail cut"),
        ("duplicate seq", lambda c: [*c[:3], c[2], *c[3:]], True, 3, "out of order"),
    ],
)
def test_tampering_named(
    case: str, mutate: object, head_from_original: bool, seq: int, words: str
) -> None:
    chain = _chain(6)
    head = _head(chain)
    problem = verify_chain(mutate(chain), head)  # type: ignore[operator]
    assert problem is not None, case
    assert problem.seq == seq, (case, problem)
    assert words in problem.problem, (case, problem)


def test_missing_head_detected() -> None:
    chain = _chain(2)
    problem = verify_chain(chain, None)
    assert problem is not None and "head" in problem.problem


def test_log_round_trip_and_db_tampering(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'i.sqlite3'}")
    log = AuditLog(db, FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    for i in range(5):
        assert log.record(AuditEvent("test.event", "tester", f"s{i}", "ok", {"i": i})) == i + 1
    assert log.verify() is None
    with db.write() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 2).values(actor="mallory"))
    problem = log.verify()
    assert problem is not None and problem.seq == 2
    with db.write() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq >= 2))
        conn.execute(update(audit_head).values(seq=1, hash=next(log.entries()).hash))
    assert log.verify() is None  # a consistent truncation with the head rewritten: see ledger
