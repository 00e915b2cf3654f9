"""Anchoring on a real JSON-RPC node: anvil on a free loopback port, stopped mid-push.

deploy with ``ztbridge chain deploy --rpc``, push with storescu to ``ztbridge up``, see the
study anchored and verified; then stop anvil while a study is being pushed: storescu still
gets every success, the anchors wait in the outbox; anvil restarts from its ``--state`` file
and every anchor lands exactly once (the on-chain record count equals the batches sealed).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_dicom_ingest import count_instances
from tests.support.anvil import ANVIL_BIN, ANVIL_FUNDER, Anvil
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import logged, make_gateway, running, storescu
from tests.support.ledger import chain_info, outbox, settled, wait_outbox
from tests.support.node import missing_peer

pytestmark = pytest.mark.integration


@pytest.fixture
def anvil(tmp_path: Path) -> Anvil:
    if not ANVIL_BIN.exists():
        missing_peer(f"anvil missing at {ANVIL_BIN}: run `npm ci --prefix tests/ledger/anvil`")
    return Anvil(tmp_path / "anvil-state.json")


def test_anchors_wait_out_a_node_outage_and_land_once(
    tmp_path: Path, dcmtk: None, anvil: Anvil
) -> None:
    nodes = [anvil]
    try:
        gw = make_gateway(
            tmp_path,
            ZTBRIDGE_LEDGER__BACKEND="rpc",
            ZTBRIDGE_LEDGER__RPC_URL=anvil.url,
            ZTBRIDGE_LEDGER__REQUEST_TIMEOUT="2",
            ZTBRIDGE_LEDGER__RECEIPT_TIMEOUT="10",
            ZTBRIDGE_LEDGER__RETRY_MAX_SECONDS="2",
            ZTBRIDGE_LEDGER__POLL_SECONDS="0.2",
            ZTBRIDGE_LEDGER__AUDIT_EVERY_SECONDS="1",
        )
        refused = gw.cli("chain", "deploy", "--rpc", anvil.url, check=False)
        assert refused.returncode != 0 and "no funds" in refused.stderr
        deployed = gw.cli("chain", "deploy", "--rpc", anvil.url, "--funder-key", ANVIL_FUNDER)
        assert "registry deployed at 0x" in deployed.stdout
        gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")

        first = make_ct_series(tmp_path / "first", 8, rows=64, columns=64)
        during = make_ct_series(tmp_path / "during", 200, rows=256, columns=256, seed=1)
        after = make_ct_series(tmp_path / "after", 6, rows=64, columns=64, seed=2)
        with running(gw):
            pushed = storescu(gw.port, first.files)
            assert pushed.returncode == 0, pushed.stderr
            wait_outbox(gw, anchored=1)
            info = chain_info(gw)
            assert info["backend"] == "rpc" and info["records_on_chain"] == 1
            assert info["sender_balance_wei"] > 0
            gw.cli("verify", "--study", first.study_uid)

            # Stop the node in the middle of a push.
            push = subprocess.Popen(
                [
                    "storescu",
                    *("-aet", "STORESCU", "-aec", "ZTBRIDGE", "127.0.0.1", str(gw.port)),
                    *(str(f) for f in during.files),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while count_instances(gw) < 8 + 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            # Hold the modality still while the node stops (that can take seconds), so the
            # push is surely in the middle when the node goes, whatever the machine's speed.
            push.send_signal(signal.SIGSTOP)
            try:
                anvil.stop()
                assert push.poll() is None, "the push ended before the node was stopped"
            finally:
                push.send_signal(signal.SIGCONT)
            _, stderr = push.communicate(timeout=300)
            assert push.returncode == 0, stderr
            assert count_instances(gw) == 8 + 200  # every instance acknowledged and kept
            pushed = storescu(gw.port, after.files)  # and another whole study meanwhile
            assert pushed.returncode == 0, pushed.stderr

            wait_outbox(gw, anchored=1, pending=2)  # both studies sealed, waiting
            waiting = chain_info(gw)
            assert waiting["chain"].startswith("unavailable")
            assert logged(gw, "retrying in")

            nodes.append(anvil.restart())  # same port, same --state file: the chain survives
            wait_outbox(gw, anchored=3)
            info = chain_info(gw)
            assert info["records_on_chain"] == 3  # each batch exactly once
        verified = gw.cli("verify", "--all")
        assert "3 batches, 214 instances" in verified.stdout

        # Offline import: sealed at once, anchored later by 'chain drain'.
        nodes[-1].stop()
        late = make_ct_series(tmp_path / "late", 3, rows=32, columns=32, seed=3)
        imported = gw.cli("import", str(tmp_path / "late"))
        assert "1 batches sealed, waiting in the outbox" in imported.stderr
        stuck = gw.cli("chain", "drain", check=False)
        assert stuck.returncode != 0 and "pending: 1 batches" in stuck.stdout
        nodes.append(nodes[-1].restart())
        drained = gw.cli("chain", "drain")
        assert "1 batches and 1 audit ranges anchored" in drained.stdout
        assert outbox(gw) == {"anchored": 4, "unbatched": 0}
        info = chain_info(gw)
        assert settled(info, 4) and info["records_on_chain"] == 4
        assert info["audit_anchored_to"] == info["audit_head"]
        gw.cli("verify", "--study", late.study_uid)

        # A node of another chain (a fresh dev chain) is refused, never written to.
        stranger = Anvil(tmp_path / "other-state.json")
        nodes.append(stranger)
        gw.env["ZTBRIDGE_LEDGER__RPC_URL"] = stranger.url
        refused_info = chain_info(gw)
        assert refused_info["chain"].startswith("unavailable: no registry was deployed")
    finally:
        for node in nodes:
            node.stop()
