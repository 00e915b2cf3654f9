"""Retry/backoff and receipt waiting, with fake transports and a fake clock: no sleeping."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from gateway.ledger.chain import Chain
from gateway.ledger.errors import LedgerUnavailableError
from gateway.ledger.retry import RetryPolicy, with_retry


class Flaky:
    """Raises ``failures`` connection errors, then answers."""

    def __init__(self, failures: int, exc: BaseException | None = None) -> None:
        self.failures = failures
        self.calls = 0
        self.exc = exc or requests.exceptions.ConnectionError("connection refused")

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_backoff_doubles_and_is_capped() -> None:
    assert RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0).delays() == [
        0.5,
        1.0,
        2.0,
        3.0,
        3.0,
    ]


def test_succeeds_after_transient_errors() -> None:
    slept: list[float] = []
    flaky = Flaky(2)
    policy = RetryPolicy(attempts=4, base_delay=0.1, max_delay=1.0)
    assert with_retry(flaky, policy=policy, sleep=slept.append) == "ok"
    assert flaky.calls == 3 and slept == [0.1, 0.2]


def test_gives_up_as_unavailable() -> None:
    slept: list[float] = []
    flaky = Flaky(10, TimeoutError("read timed out"))
    with pytest.raises(LedgerUnavailableError) as caught:
        with_retry(flaky, policy=RetryPolicy(attempts=3, base_delay=1), sleep=slept.append)
    assert flaky.calls == 3 and slept == [1, 2]
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_other_errors_are_not_retried() -> None:
    flaky = Flaky(1, ValueError("execution reverted"))
    with pytest.raises(ValueError):
        with_retry(flaky, policy=RetryPolicy(), sleep=lambda _s: None)
    assert flaky.calls == 1


class _FakeEth:
    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.calls = 0

    def get_transaction_receipt(self, _tx_hash: Any) -> dict[str, int]:
        from web3.exceptions import TransactionNotFound

        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("reset by peer")
        if self.calls <= self.misses:
            raise TransactionNotFound("not yet")
        return {"status": 1}


class _FakeWeb3:
    def __init__(self, misses: int) -> None:
        self.eth = _FakeEth(misses)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_receipt_wait_polls_then_times_out() -> None:
    clock = _Clock()
    chain = Chain(
        _FakeWeb3(misses=3),  # type: ignore[arg-type]
        retry=RetryPolicy(attempts=3, base_delay=0.01),
        receipt_timeout=10,
        poll_interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    assert dict(chain.wait_for_receipt(b"\x01" * 32)) == {"status": 1}

    clock = _Clock()
    slow = Chain(
        _FakeWeb3(misses=1000),  # type: ignore[arg-type]
        receipt_timeout=5,
        poll_interval=1,
        clock=clock,
        sleep=clock.sleep,
    )
    with pytest.raises(LedgerUnavailableError):
        slow.wait_for_receipt(b"\x01" * 32)
    assert clock.now == pytest.approx(5, abs=0.5)
