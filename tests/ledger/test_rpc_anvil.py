"""The same verbs through the rpc backend against anvil, a real JSON-RPC node.

anvil comes pinned from npm (``npm ci --prefix tests/ledger/anvil``); its binary lives in the
platform package ``@foundry-rs/anvil-<os>-<arch>/bin/anvil``. Without it the tests fail with the
command that installs it: a skipped real-node check would be a silent pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.ledger import Ledger, LedgerRevertError, Role, RpcChain, open_chain
from gateway.ledger.retry import RetryPolicy
from tests.support.anvil import ANVIL_BIN, ANVIL_FUNDER, Anvil
from tests.support.ledger_flows import transfer_and_study_grants
from tests.support.node import missing_peer

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


@pytest.fixture(scope="module", autouse=True)
def _anvil_installed() -> None:
    if not ANVIL_BIN.exists():
        missing_peer(f"anvil missing at {ANVIL_BIN}: run `npm ci --prefix tests/ledger/anvil`")


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def account(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(hashlib.sha256(b"key:" + label.encode()).digest())
    return acct


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "anvil-state.json"


@pytest.fixture
def anvil(state: Path) -> Iterator[Anvil]:
    node = Anvil(state)
    yield node
    node.stop()


def test_verbs_over_rpc_and_state_survives_restart(anvil: Anvil, state: Path) -> None:
    chain = open_chain("rpc", url=anvil.url, poll_interval=0.05, retry=RetryPolicy(attempts=3))
    assert isinstance(chain, RpcChain)
    admin, sender, patient, doctor = (account(n) for n in ("admin", "sender", "patient", "doc"))
    funder: LocalAccount = Account.from_key(ANVIL_FUNDER)
    for who in (admin, sender, patient, doctor):
        chain.send_value(funder, who.address, 10**18)

    ledger = Ledger.deploy(chain, admin, h("admin-hpke"))
    start = ledger.block_height()
    ledger.register_user(admin, sender.address, Role.SENDER, h("sender-hpke"))
    ledger.register_user(admin, patient.address, Role.PATIENT, h("patient-hpke"))
    ledger.register_user(admin, doctor.address, Role.DOCTOR, h("doctor-hpke"))
    receipt = ledger.anchor_study(
        sender, patient.address, h("r1"), h("root"), CID, b"cap" * 40, study_id=h("s1")
    )
    assert receipt.gas_used > 0
    assert not ledger.has_access(h("r1"), doctor.address)
    ledger.grant_study(patient, h("s1"), doctor.address, b"doc-cap" * 20)
    assert ledger.has_access(h("r1"), doctor.address)

    with pytest.raises(LedgerRevertError) as caught:
        ledger.anchor_study(sender, patient.address, h("r1"), h("x"), CID, b"c", study_id=h("s1"))
    assert caught.value.name == "RecordExists" and caught.value.error_args == (h("r1"),)
    with pytest.raises(LedgerRevertError) as caught:
        ledger.grant_study(doctor, h("s1"), doctor.address, b"c")
    assert caught.value.name == "NotStudyOwner"

    names = [e.name for e in ledger.events_since(start)]
    assert {"UserAdded", "RecordAnchored", "AccessGranted"} <= set(names)
    records = ledger.records_of(patient.address)
    height = ledger.block_height()
    head = bytes(chain.w3.eth.get_block(height)["hash"])

    anvil.stop()
    assert state.exists()
    again = Anvil(state)
    try:
        reopened = open_chain("rpc", url=again.url, poll_interval=0.05)
        ledger2 = Ledger(reopened, ledger.address)
        assert ledger2.records_of(patient.address) == records
        assert ledger2.has_access(h("r1"), doctor.address)
        assert reopened.block_height() == height
        assert bytes(reopened.w3.eth.get_block(height)["hash"]) == head
    finally:
        again.stop()


def test_transfer_and_study_grants_over_rpc(anvil: Anvil) -> None:
    chain = open_chain("rpc", url=anvil.url, poll_interval=0.05, retry=RetryPolicy(attempts=3))
    funder: LocalAccount = Account.from_key(ANVIL_FUNDER)
    admin = account("t-admin")
    chain.send_value(funder, admin.address, 10**18)
    try:
        transfer_and_study_grants(
            Ledger.deploy(chain, admin, h("admin-hpke")),
            admin,
            account("t-sender"),
            account("t-custodian"),
            account("t-patient"),
            account("t-doctor"),
            lambda address: None if address == admin.address else _fund(chain, funder, address),
        )
    finally:
        chain.close()


def _fund(chain: RpcChain | object, funder: LocalAccount, address: str) -> None:
    assert isinstance(chain, RpcChain)
    chain.send_value(funder, address, 10**18)
