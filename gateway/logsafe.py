"""Log lines that a peer cannot forge.

AE titles from an A-ASSOCIATE-RQ, UIDs from a data set, a device name in a URL path: a peer
chooses them, and a newline in one of them, logged as it is, starts what looks like a line of
our own ("... refused\\n2026-12-01 12:00:00 INFO ztbridge.dicom: association from CT01
accepted"). Two layers: ``shown`` for untrusted values at the call sites that log them (plain
printable text is shown as is, anything else as its ``repr``), and ``SafeFormatter`` under
every log line, which escapes control characters in the message itself whatever a call site
forgot. (Tracebacks, appended after the message, keep their lines.)
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u0085\u2028\u2029]")


def shown(value: object) -> str:
    """An untrusted value for a log line: as is when it is printable text, else its repr."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def escape_controls(text: str) -> str:
    """``text`` with line breaks and other control characters written as escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class SafeFormatter(logging.Formatter):
    """A formatter whose messages are always one line (see module doc)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)
