"""Bounded exponential backoff for transient node failures.

Why a small function of our own: the delays and the set of retried exceptions are part of the
ledger's contract with its callers (a revert is never retried, a dropped connection is), and
the sleep function is injected so tests run without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import requests

from gateway.ledger.errors import LedgerUnavailableError

T = TypeVar("T")

#: What counts as "the node is unreachable or slow", as opposed to "the node said no".
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all, waiting base, 2·base, 4·base … capped at ``max_delay``."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than attempts)."""
        return [
            min(self.max_delay, self.base_delay * (2**i)) for i in range(max(0, self.attempts - 1))
        ]


def with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    what: str = "ledger call",
) -> T:
    """Call ``fn``; on a transient error wait and try again; give up as LedgerUnavailableError."""
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except TRANSIENT_ERRORS as e:
            if attempt >= len(delays):
                raise LedgerUnavailableError(
                    f"{what} failed after {attempt + 1} attempts: {e}"
                ) from e
            sleep(delays[attempt])
    raise AssertionError("unreachable")  # pragma: no cover
