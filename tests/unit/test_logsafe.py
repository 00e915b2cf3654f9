"""gateway/logsafe: no byte a peer chose can start a log line or reach a terminal raw, in a
message, in a traceback (the probe's 69-character UID went out through pynetdicom's
traceback), or in a thread's dying exception."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from gateway.logsafe import SafeFormatter, log_thread_deaths

FORGED = "1.2.3\n2026-12-01 12:00:00,000 INFO    ztbridge.dicom: association accepted\x1b[2J"
FAKE_LINE = "2026-12-01 12:00:00,000 INFO"


def _lines_safe(text: str) -> None:
    assert "\x1b" not in text, text
    assert not any(line.startswith(FAKE_LINE) for line in text.splitlines()), text
    assert "\\n2026-12-01" in text and "\\x1b[2J" in text, text


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException as caught:
        ei = (type(caught), caught, caught.__traceback__)
    return logging.LogRecord("t", logging.ERROR, __file__, 1, "refused", (), ei)


def test_an_exception_text_in_a_traceback_is_escaped() -> None:
    formatted = SafeFormatter("%(levelname)s %(message)s").format(
        _record(ValueError(f"Invalid UID '{FORGED}'"))
    )
    _lines_safe(formatted)
    assert "Traceback (most recent call last):" in formatted  # still a traceback
    assert "ValueError: Invalid UID '1.2.3\\n2026" in formatted


def test_chained_exceptions_and_notes_are_escaped() -> None:
    def inner() -> None:
        raise KeyError(FORGED)

    try:
        try:
            inner()
        except KeyError as e:
            err = RuntimeError(FORGED)
            err.add_note(FORGED)
            raise err from e
    except RuntimeError as caught:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "x", (), (RuntimeError, caught, caught.__traceback__)
        )
    formatted = SafeFormatter("%(message)s").format(record)
    _lines_safe(formatted)
    assert formatted.count("\\x1b[2J") == 3 and "direct cause" in formatted, formatted


def test_an_exception_group_is_escaped() -> None:
    group = ExceptionGroup(FORGED, [ValueError(FORGED), TypeError("plain")])
    formatted = SafeFormatter("%(message)s").format(_record(group))
    _lines_safe(formatted)
    assert "TypeError: plain" in formatted


def test_a_text_cached_by_another_formatter_is_not_reused() -> None:
    record = _record(ValueError(FORGED))
    logging.Formatter("%(message)s").format(record)  # caches record.exc_text, raw
    assert record.exc_text is not None and "\x1b" in record.exc_text
    _lines_safe(SafeFormatter("%(message)s").format(record))


def test_stack_info_is_escaped() -> None:
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "x", (), None, sinfo=FORGED)
    formatted = SafeFormatter("%(message)s").format(record)
    assert "\x1b" not in formatted


def test_a_dying_thread_is_logged_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # restored after
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ztbridge.test-threads")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log_thread_deaths(logger)

        def die() -> None:
            raise ValueError(FORGED)

        t = threading.Thread(target=die, name="Victim")
        t.start()
        t.join()
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert text.startswith("ERROR ztbridge.test-threads: thread Victim died: ValueError"), text
    _lines_safe(text)
