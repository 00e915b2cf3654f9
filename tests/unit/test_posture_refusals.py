"""The in-memory tally of refused posture posts: what is reported at once, what is summarised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.posture.refusals import OTHER, RefusalTally

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_first_of_each_kind_is_reported_the_rest_summarised() -> None:
    tally = RefusalTally(timedelta(seconds=60))
    firsts = [
        tally.note(at(i), device, problem, f"10.0.0.{i % 7}")
        for i, (device, problem) in enumerate(
            [("CT01", "bad-signature")] * 5 + [("MR01", "bad-signature")] * 2 + [("CT01", "stale")]
        )
    ]
    assert firsts == [True, False, False, False, False, True, False, True]
    assert tally.take_summary(at(59)) is None  # the window is not over: nothing changes
    summary = tally.take_summary(at(60))
    assert summary is not None and summary.total == 5
    assert [(s.device, s.problem, s.count) for s in summary.suppressed] == [
        ("CT01", "bad-signature", 4),
        ("MR01", "bad-signature", 1),
    ]
    assert summary.suppressed[0].peers == ("10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert tally.take_summary(at(200)) is None  # a fresh window with nothing in it
    assert tally.note(at(201), "CT01", "bad-signature", "x")  # reported again: a new window


def test_nothing_to_summarise_and_forced_summaries() -> None:
    tally = RefusalTally(timedelta(seconds=60))
    tally.note(at(0), "CT01", "bad-signature", "a")
    assert tally.take_summary(at(61)) is None  # only firsts: all reported already
    tally.note(at(62), "CT01", "bad-signature", "a")
    tally.note(at(63), "CT01", "bad-signature", "a")
    summary = tally.take_summary(at(64), force=True)  # shutting down
    assert summary is not None and summary.total == 1


def test_memory_is_bounded_whatever_the_names() -> None:
    tally = RefusalTally(timedelta(seconds=60), max_keys=3)
    for i in range(1000):
        tally.note(at(0), f"DEV{i}", "bad-signature", "a")
    summary = tally.take_summary(at(60))
    assert summary is not None
    assert [(s.device, s.count) for s in summary.suppressed] == [(OTHER, 996)]
