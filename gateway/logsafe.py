"""Log lines that a peer cannot forge.

AE titles from an A-ASSOCIATE-RQ, UIDs from a data set, a device name in a URL path: a peer
chooses them, and a newline in one of them, logged as it is, starts what looks like a line of
our own ("... refused\\n2026-12-01 12:00:00 INFO ztbridge.dicom: association from CT01
accepted"). Two layers: ``shown`` for untrusted values at the call sites that log them (plain
printable text is shown as is, anything else as its ``repr``), and ``SafeFormatter`` under
every log line, which escapes control characters in the message itself whatever a call site
forgot, and in what follows it: a traceback keeps its own lines, but each exception's text
(where a library quotes the peer's value, as pydicom does for a bad UID) and every line of a
stack is escaped, so no byte of it can start a line or carry a terminal escape sequence.

``log_thread_deaths`` routes an exception that ends a thread through logging too: Python's
default hook prints it raw on stderr, past every formatter.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from types import TracebackType
from typing import Any

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0085\u2028\u2029]")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def shown(value: object) -> str:
    """An untrusted value for a log line: as is when it is printable text, else its repr."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters written as escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _escaped_lines(chunks: Any) -> list[str]:
    """Each chunk of formatted text as one escaped line."""
    return [escape_controls(str(chunk).rstrip("\n")) + "\n" for chunk in chunks]


def _escape_exception_text(te: traceback.TracebackException) -> None:
    """Make ``te`` and every exception chained to it format their own text escaped.

    Why per exception: the stdlib's formatting (chains, groups, notes, carets) stays as it
    is; only ``format_exception_only``, the part that quotes an exception's message, is
    wrapped, so a newline inside a message is written ``\\n`` instead of starting a line.
    """
    seen: set[int] = set()
    todo = [te]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        notes = getattr(current, "__notes__", None)
        if isinstance(notes, list | tuple):  # formatted a line per "\n": escape them first
            current.__notes__ = [escape_controls(str(note)) for note in notes]
        plain = current.format_exception_only

        def escaped(*args: Any, _plain: Any = plain, **kwargs: Any) -> Any:
            return iter(_escaped_lines(_plain(*args, **kwargs)))

        setattr(current, "format_exception_only", escaped)  # noqa: B010 (an instance method)
        todo.extend(t for t in (current.__cause__, current.__context__) if t is not None)
        todo.extend(current.exceptions or ())


def format_exception(ei: ExcInfo | tuple[None, None, None]) -> str:
    """A traceback whose every exception text is escaped (see ``_escape_exception_text``)."""
    _, value, tb = ei
    if value is None:
        return ""
    te = traceback.TracebackException(type(value), value, tb)
    _escape_exception_text(te)
    lines: list[str] = []
    for chunk in te.format():
        # Frame lines come from our own source; escaped too, keeping each line a line.
        lines.extend(escape_controls(line) for line in chunk.splitlines())
    return "\n".join(lines)


class SafeFormatter(logging.Formatter):
    """A formatter whose messages are always one line, and whose tracebacks cannot be
    forged (see module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        # Another formatter may have cached its own, unescaped, text of the exception.
        record.exc_text = None
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return format_exception(ei)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        return "\n".join(escape_controls(line) for line in stack_info.splitlines())


def log_thread_deaths(logger: logging.Logger) -> None:
    """Log an exception that ends a thread through ``logger`` (hence escaped), not raw on
    stderr as ``threading``'s default hook does."""

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        logger.error(
            "thread %s died: %s",
            name,
            args.exc_type.__name__,
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        )

    threading.excepthook = hook
