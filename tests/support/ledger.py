"""Watching a running gateway's anchoring from outside: ``ztbridge chain info --json``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.support.gateway_proc import GatewayProcess


def chain_info(gw: GatewayProcess) -> dict[str, Any]:
    """What ``ztbridge chain info --json`` reports."""
    info: dict[str, Any] = json.loads(gw.cli("chain", "info", "--json").stdout)
    return info


def wait_for_info(
    gw: GatewayProcess,
    done: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Poll ``chain info`` until ``done`` holds; fail with the last report and the log."""
    deadline = time.monotonic() + timeout
    info = chain_info(gw)
    while not done(info):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {info}\n{gw.log()[-4000:]}")
        time.sleep(0.5)
        info = chain_info(gw)
    return info


def settled(info: dict[str, Any], batches: int) -> bool:
    """``batches`` anchored, nothing pending, every instance in a batch."""
    return (
        info["batches_anchored"] == batches
        and info["batches_pending"] == 0
        and info["instances_unbatched"] == 0
    )
