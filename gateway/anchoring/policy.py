"""When to seal, when to anchor the audit log, how long to wait after a failure: pure decisions.

Kept apart from the worker so each rule is a function of its inputs (times passed in, never
read from a clock here) and is tested with a table of cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from datetime import datetime


def due_studies(
    last_arrival: Mapping[str, datetime],
    released: Set[str],
    now: datetime,
    idle_seconds: float,
) -> list[str]:
    """Studies with unbatched instances that should be sealed now, oldest arrival first.

    ``last_arrival`` maps every study that has unbatched instances to its latest arrival.
    A study is due when an association that brought it ended (``released``) or when it has
    had no new instance for ``idle_seconds``. A released study with nothing unbatched (every
    instance was a duplicate) is not in ``last_arrival`` and so is not due.
    """
    due = [
        study
        for study, at in last_arrival.items()
        if study in released or (now - at).total_seconds() >= idle_seconds
    ]
    return sorted(due, key=lambda s: (last_arrival[s], s))


def audit_range_due(
    last_anchored_seq: int,
    head_seq: int,
    every_events: int,
    seconds_since_last: float,
    every_seconds: float,
    max_entries: int,
) -> tuple[int, int] | None:
    """The next audit range to anchor, or None.

    Due when ``every_events`` entries are waiting, or when any are waiting and
    ``every_seconds`` passed since the last audit anchor. Ranges start right after the last
    one (the contract refuses gaps) and hold at most ``max_entries`` so a long backlog is
    anchored in bounded steps.
    """
    waiting = head_seq - last_anchored_seq
    if waiting <= 0:
        return None
    if waiting < every_events and seconds_since_last < every_seconds:
        return None
    start = last_anchored_seq + 1
    return start, min(head_seq, start + max_entries - 1)


def backoff_seconds(failures: int, base: float, cap: float) -> float:
    """Delay before the next try after ``failures`` consecutive failures (0 after none)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** min(failures - 1, 30)))
