"""Watching a running gateway's anchoring from outside.

Waiting polls the index directly (a read-only SQLite query, milliseconds); what the chain
holds is then asked once through ``ztbridge chain info --json``, as an operator would.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from tests.support.gateway_proc import GatewayProcess


def chain_info(gw: GatewayProcess) -> dict[str, Any]:
    """What ``ztbridge chain info --json`` reports."""
    info: dict[str, Any] = json.loads(gw.cli("chain", "info", "--json").stdout)
    return info


def outbox(gw: GatewayProcess) -> dict[str, int]:
    """Batch rows by state, plus ``unbatched`` instances, read from the index."""
    conn = sqlite3.connect(f"file:{gw.home / 'index.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        counts = dict(conn.execute("SELECT state, count(*) FROM anchor_batches GROUP BY state"))
        (unbatched,) = conn.execute(
            "SELECT count(*) FROM instances i WHERE NOT EXISTS"
            " (SELECT 1 FROM anchor_batch_members m WHERE m.instance_id = i.id)"
        ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return {"unbatched": -1}
    finally:
        conn.close()
    return {**counts, "unbatched": int(unbatched)}


def wait_outbox(
    gw: GatewayProcess, anchored: int, pending: int = 0, timeout: float = 120.0
) -> None:
    """Wait until ``anchored`` batches are anchored, ``pending`` wait, none is unsealed."""
    deadline = time.monotonic() + timeout
    while True:
        state = outbox(gw)
        want = state.get("anchored", 0) == anchored and state.get("pending", 0) == pending
        if want and state["unbatched"] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {anchored} anchored / {pending} pending: {state}\n"
                + gw.log()[-4000:]
            )
        time.sleep(0.1)


def settled(info: dict[str, Any], batches: int) -> bool:
    """``batches`` anchored, nothing pending, every instance in a batch (chain info)."""
    return (
        info["batches_anchored"] == batches
        and info["batches_pending"] == 0
        and info["instances_unbatched"] == 0
    )
