"""A home whose registry is the first version (per-record grants, no transfer) keeps working.

The old registry is deployed from its real artifact (``fixtures/ZtbridgeRegistry.v1.json``, the
build committed before version 2) exactly as an older ``ztbridge up`` or ``chain deploy``
did, with a batch anchored on it. Then the current code connects: on the embedded chain it
deploys version 2 beside the old one and anchors new batches there; on an RPC node it refuses
to write with a message naming ``chain deploy``, which then deploys version 2. Either way the
old record stays readable where it is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from gateway.anchoring.outbox import ANCHORED
from gateway.anchoring.session import ETH, open_deployment
from gateway.clock import FixedClock
from gateway.importer import import_file
from gateway.index.models import anchor_batches
from gateway.ledger import Ledger, LedgerConfigError, Role
from gateway.ledger.artifact import load_artifact
from gateway.ledger.chain import Chain
from gateway.ledger.deployment import (
    Deployment,
    deploy_registry,
    find_deployment,
    fund_accounts,
    list_deployments,
    open_embedded,
    record_deployment,
    rpc_chain,
)
from gateway.ledger.ledger import CONTRACT_VERSION
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.anvil import ANVIL_BIN, ANVIL_FUNDER, Anvil
from tests.support.dicomgen import make_ct_series
from tests.support.node import missing_peer

V1 = Path(__file__).parent / "fixtures" / "ZtbridgeRegistry.v1.json"
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
OLD_RECORD = hashlib.sha256(b"old-record").digest()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


def open_gw(home: Path, clock: FixedClock, **ledger: str) -> Gateway:
    settings = load_settings(
        home=home, custodian_passphrase="upgrade-test", ledger={"anchor_idle_seconds": 1, **ledger}
    )
    return open_gateway(settings, clock=clock)


def deploy_v1(gw: Gateway, chain: Chain, backend: str, rpc_url: str | None = None) -> Deployment:
    """What the previous version did on first use: deploy, register, record; plus one anchor."""
    accounts = gw.accounts
    assert accounts is not None
    old = Ledger.deploy(chain, accounts.admin, gw.custodian.public, artifact=load_artifact(V1))
    assert old.contract_version() == 1 and not old.is_current()
    for address, role in (
        (accounts.sender_address, Role.SENDER),
        (accounts.custodian_address, Role.PATIENT),
    ):
        old.register_user(accounts.admin, address, role, gw.custodian.public)
    # The v1 signature: anchorRecord(owner, recordId, merkleRoot, manifestCid, sealedCapsule).
    old._send(
        accounts.sender,
        "anchorRecord",
        old.chain.w3.to_checksum_address(accounts.custodian_address),
        OLD_RECORD,
        hashlib.sha256(b"old-root").digest(),
        CID,
        b"old-capsule",
    )
    return record_deployment(
        gw.db, gw.audit, gw.clock, backend, chain, old, accounts, "test", rpc_url=rpc_url
    )


def seal_one(gw: Gateway, folder: Path) -> None:
    series = make_ct_series(folder, 2, rows=16, columns=16)
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    assert gw.anchoring is not None
    assert len(gw.anchoring.seal_studies({series.study_uid})) == 1


def assert_old_record_readable(gw: Gateway, old: Deployment) -> None:
    session = open_deployment(gw.settings, old)
    try:
        record = session.ledger.record_by_id(OLD_RECORD)
        assert record is not None and record.manifest_cid == CID
    finally:
        session.close()


@pytest.fixture
def gw(tmp_path: Path, clock: FixedClock) -> Iterator[Gateway]:
    g = open_gw(tmp_path / "home", clock)
    yield g
    g.close()


def test_embedded_home_with_an_old_registry_upgrades_on_start(
    gw: Gateway, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = open_embedded(gw.settings.home)
    try:
        assert gw.accounts is not None
        fund_accounts(chain, chain.genesis_accounts[0], gw.accounts, 1000 * ETH)
        old = deploy_v1(gw, chain, "embedded")
    finally:
        chain.close()
    seal_one(gw, tmp_path / "a")
    assert gw.anchoring is not None
    with caplog.at_level("WARNING", "ztbridge.anchoring"):
        session = gw.anchoring.connect()
    try:
        assert "is version 1; this ztbridge needs version 2" in caplog.text
        assert session.deployment.id != old.id and session.ledger.is_current()
        assert session.ledger.contract_version() == CONTRACT_VERSION
        assert session.ledger.custodian() == gw.accounts.custodian_address  # type: ignore[union-attr]
        assert gw.anchoring.send_pending(session).batches == 1
    finally:
        session.close()
    with gw.db.read() as conn:
        (row,) = conn.execute(select(anchor_batches)).all()
    assert (row.state, row.deployment_id) == (ANCHORED, session.deployment.id)
    assert [d.id for d in list_deployments(gw.db)] == [old.id, session.deployment.id]
    assert_old_record_readable(gw, old)
    # The next start finds the new registry and deploys nothing more.
    again = gw.anchoring.connect()
    try:
        assert again.deployment.id == session.deployment.id
    finally:
        again.close()


def test_rpc_chain_with_an_old_registry_says_to_deploy(tmp_path: Path, clock: FixedClock) -> None:
    if not ANVIL_BIN.exists():
        missing_peer(f"anvil missing at {ANVIL_BIN}: run `npm ci --prefix tests/ledger/anvil`")
    node = Anvil(tmp_path / "anvil-state.json")
    try:
        gw = open_gw(tmp_path / "home", clock, backend="rpc", rpc_url=node.url)
        try:
            _rpc_upgrade(gw, node, tmp_path)
        finally:
            gw.close()
    finally:
        node.stop()


def _rpc_upgrade(gw: Gateway, node: Anvil, tmp_path: Path) -> None:
    accounts = gw.accounts
    assert accounts is not None and gw.anchoring is not None
    funder: LocalAccount = Account.from_key(ANVIL_FUNDER)
    chain = rpc_chain(node.url)
    try:
        fund_accounts(chain, funder, accounts, ETH)
        old = deploy_v1(gw, chain, "rpc", node.url)
        seal_one(gw, tmp_path / "a")
        with pytest.raises(LedgerConfigError) as refused:
            gw.anchoring.connect()
        assert f"ztbridge chain deploy --rpc {node.url}" in str(refused.value)
        assert "version 1" in str(refused.value)
        # What 'chain deploy --rpc' does: the chain holds no current registry, so it deploys.
        assert find_deployment(gw.db, "rpc", chain) is None
        ledger = deploy_registry(chain, accounts, gw.custodian)
        assert ledger.address != old.address and ledger.is_current()
        new = record_deployment(
            gw.db, gw.audit, gw.clock, "rpc", chain, ledger, accounts, "test", rpc_url=node.url
        )
        # Deploying again finds it (no second deployment after a crash before recording).
        assert deploy_registry(chain, accounts, gw.custodian).address == ledger.address
    finally:
        chain.close()
    session = gw.anchoring.connect()
    try:
        assert session.deployment.id == new.id
        assert gw.anchoring.send_pending(session).batches == 1
    finally:
        session.close()
    assert_old_record_readable(gw, old)
