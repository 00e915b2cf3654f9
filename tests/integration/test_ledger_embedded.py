"""Anchoring with the embedded chain, end to end: storescu -> ztbridge up -> chain -> verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import make_gateway, running, storescu
from tests.support.ledger import chain_info, settled, wait_outbox

pytestmark = pytest.mark.integration


def test_study_is_anchored_and_survives_a_restart(tmp_path: Path, dcmtk: None) -> None:
    gw = make_gateway(
        tmp_path, ZTBRIDGE_LEDGER__AUDIT_EVERY_SECONDS="1", ZTBRIDGE_LEDGER__POLL_SECONDS="0.2"
    )
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    first = make_ct_series(tmp_path / "first", 12, rows=64, columns=64)
    with running(gw):
        pushed = storescu(gw.port, first.files)
        assert pushed.returncode == 0, pushed.stderr
        wait_outbox(gw, anchored=1)
        info = chain_info(gw)
        assert settled(info, 1)
        assert info["backend"] == "embedded" and info["chain"] == "reachable"
        assert info["records_on_chain"] == 1
        verified = gw.cli("verify", "--study", first.study_uid)
        assert "12 instances" in verified.stdout
    assert "registry" in gw.log() and "anchored" in gw.log()
    height = chain_info(gw)["block_height"]

    # The clean stop wrote a snapshot of the chain; the restart loads it.
    snapshot = gw.home / "ledger" / "chain.snapshot"
    assert snapshot.exists() and "chain snapshot at block" in gw.log()
    # After a restart: same contract, same records, same blocks.
    second = make_ct_series(tmp_path / "second", 5, rows=64, columns=64)
    with running(gw):
        again = chain_info(gw)
        assert again["records_on_chain"] == 1 and again["block_height"] >= height
        assert again["address"] == info["address"]
        pushed = storescu(gw.port, second.files)
        assert pushed.returncode == 0, pushed.stderr
        wait_outbox(gw, anchored=2)
        info = chain_info(gw)
        assert settled(info, 2) and info["records_on_chain"] == 2
    verified = gw.cli("verify", "--all")
    assert "2 batches, 17 instances" in verified.stdout
    # An auditor who trusts only the journal: the same verdict without the snapshot, and a
    # damaged snapshot costs a warning and a full replay, never a wrong answer.
    replayed = gw.cli("verify", "--all", "--full-replay")
    assert "2 batches, 17 instances" in replayed.stdout
    snapshot.write_bytes(snapshot.read_bytes()[:-1000])
    damaged = gw.cli("verify", "--all")
    assert "2 batches, 17 instances" in damaged.stdout
    assert "replaying the whole journal" in damaged.stderr
    status = gw.cli("status").stdout
    assert "2 batches anchored" in status and "pending anchors: 0 batches" in status
