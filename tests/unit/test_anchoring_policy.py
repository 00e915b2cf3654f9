"""The anchoring decisions, as tables: when a study is due, when the audit log is, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.anchoring.policy import audit_range_due, backoff_seconds, due_studies

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ago(seconds: float) -> datetime:
    return T0 - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("last_arrival", "released", "expected"),
    [
        ({}, set(), []),
        ({"A": ago(5)}, set(), []),  # still arriving
        ({"A": ago(30)}, set(), ["A"]),  # idle exactly the threshold
        ({"A": ago(29.9)}, set(), []),
        ({"A": ago(1)}, {"A"}, ["A"]),  # its association ended: at once
        ({"A": ago(1)}, {"B"}, []),  # B ended but has nothing unbatched (duplicates only)
        ({"A": ago(40), "B": ago(100), "C": ago(1)}, set(), ["B", "A"]),  # oldest first
        ({"A": ago(1), "B": ago(2)}, {"A", "B"}, ["B", "A"]),
    ],
)
def test_due_studies(
    last_arrival: dict[str, datetime], released: set[str], expected: list[str]
) -> None:
    assert due_studies(last_arrival, released, T0, 30.0) == expected


@pytest.mark.parametrize(
    ("last", "head", "since", "expected"),
    [
        (0, 0, 10_000.0, None),  # nothing logged
        (10, 10, 10_000.0, None),  # nothing new
        (0, 5, 10.0, None),  # few and recent
        (0, 5, 300.0, (1, 5)),  # few but the period is over
        (0, 100, 1.0, (1, 100)),  # enough entries
        (100, 199, 1.0, None),  # one short of enough
        (100, 200, 1.0, (101, 200)),
        (0, 1_000, 1.0, (1, 250)),  # capped ranges for a backlog
        (250, 1_000, 1.0, (251, 500)),
    ],
)
def test_audit_range_due(
    last: int, head: int, since: float, expected: tuple[int, int] | None
) -> None:
    assert audit_range_due(last, head, 100, since, 300.0, 250) == expected


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (100, 60.0)],
)
def test_backoff_doubles_to_a_cap(failures: int, expected: float) -> None:
    assert backoff_seconds(failures, 1.0, 60.0) == expected
