"""The registry through ``Ledger`` on the embedded chain: verbs, reverts, events, restarts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from gateway.ledger import (
    EmbeddedChain,
    Ledger,
    LedgerConfigError,
    LedgerRevertError,
    Role,
    embedded,
    open_chain,
)
from gateway.ledger.snapshot import read_snapshot, write_snapshot
from tests.support.ledger_flows import transfer_and_study_grants

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
ETH = 10**18


def h(label: str) -> bytes:
    """A stand-in bytes32 (record id, root, HPKE key)."""
    return hashlib.sha256(label.encode()).digest()


def account(label: str) -> LocalAccount:
    """A deterministic gateway account."""
    acct: LocalAccount = Account.from_key(hashlib.sha256(b"key:" + label.encode()).digest())
    return acct


class FakeClock:
    """Starts at a fixed instant and advances 12 s per reading: no sleeping, fixed times."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 12
        return self.now


@dataclass
class Cast:
    admin: LocalAccount
    sender: LocalAccount
    patient: LocalAccount
    doctor: LocalAccount


@pytest.fixture
def cast() -> Cast:
    return Cast(account("admin"), account("sender"), account("patient"), account("doctor"))


def setup_world(chain: EmbeddedChain, cast: Cast) -> Ledger:
    """Fund the cast, deploy, register everyone, anchor one record and grant it."""
    for who in (cast.admin, cast.sender, cast.patient):
        chain.fund(who.address, 10 * ETH)
    ledger = Ledger.deploy(chain, cast.admin, h("admin-hpke"))
    ledger.register_user(cast.admin, cast.sender.address, Role.SENDER, h("sender-hpke"))
    ledger.register_user(cast.admin, cast.patient.address, Role.PATIENT, h("patient-hpke"))
    ledger.register_user(cast.admin, cast.doctor.address, Role.DOCTOR, h("doctor-hpke"))
    ledger.anchor_study(
        cast.sender, cast.patient.address, h("r1"), h("root1"), CID, b"cap" * 40, study_id=h("s1")
    )
    ledger.grant_study(cast.patient, h("s1"), cast.doctor.address, b"doc-cap" * 20)
    return ledger


@pytest.fixture
def chain() -> Iterator[EmbeddedChain]:
    c = EmbeddedChain(clock=FakeClock(), sleep=lambda _s: None)
    yield c
    c.close()


def test_verbs_and_events(chain: EmbeddedChain, cast: Cast) -> None:
    start = chain.block_height() + 1
    ledger = setup_world(chain, cast)
    assert ledger.has_access(h("r1"), cast.patient.address)
    assert ledger.has_access(h("r1"), cast.doctor.address)
    assert not ledger.has_access(h("r1"), cast.sender.address)
    assert not ledger.has_access(h("unknown"), cast.doctor.address)

    (rec,) = ledger.records_of(cast.patient.address)
    assert (rec.record_id, rec.merkle_root, rec.manifest_cid) == (h("r1"), h("root1"), CID)
    assert rec.sealed_capsule == b"cap" * 40 and rec.sender == cast.sender.address
    assert ledger.record_by_id(h("r1")) == rec
    assert ledger.record_by_id(h("nope")) is None
    assert ledger.user(cast.doctor.address).role is Role.DOCTOR
    assert ledger.user(account("stranger").address).role is None

    receipt = ledger.revoke_study(cast.patient, h("s1"), cast.doctor.address)
    assert receipt.gas_used > 0 and receipt.block_number == ledger.block_height()
    assert not ledger.has_access(h("r1"), cast.doctor.address)
    ledger.anchor_audit(cast.sender, h("audit"), 1, 10)
    assert ledger.last_audit_seq() == 10
    ledger.suspend_user(cast.admin, cast.doctor.address)
    assert ledger.user(cast.doctor.address).suspended

    names = [e.name for e in ledger.events_since(start)]
    for expected in (
        "UserAdded",
        "RecordAnchored",
        "AccessGranted",
        "AccessRevoked",
        "AuditAnchored",
        "UserSuspended",
    ):
        assert expected in names
    anchored = next(e for e in ledger.events_since(start) if e.name == "RecordAnchored")
    assert anchored.args["recordId"] == h("r1") and anchored.args["manifestCid"] == CID
    assert ledger.events_since(ledger.block_height() + 1) == []


def test_reverts_are_decoded(chain: EmbeddedChain, cast: Cast) -> None:
    ledger = setup_world(chain, cast)
    with pytest.raises(LedgerRevertError) as caught:
        ledger.anchor_study(
            cast.sender, cast.patient.address, h("r1"), h("x"), CID, b"c", study_id=h("s1")
        )
    assert caught.value.name == "RecordExists"
    assert caught.value.error_args == (h("r1"),)
    with pytest.raises(LedgerRevertError) as caught:
        ledger.register_user(cast.sender, cast.doctor.address, Role.DOCTOR, h("k"))
    assert caught.value.name == "NotAdmin"
    with pytest.raises(LedgerRevertError) as caught:
        ledger.record(cast.patient.address, 5)
    assert caught.value.name == "IndexOutOfBounds"
    # A refused transaction uses no nonce: the next one still goes through.
    ledger.anchor_study(
        cast.sender, cast.patient.address, h("r2"), h("root2"), CID, b"c", study_id=h("s1")
    )
    assert ledger.record_count(cast.patient.address) == 2


def test_transfer_and_study_grants(chain: EmbeddedChain) -> None:
    transfer_and_study_grants(
        Ledger.deploy(chain, _funded(chain, account("t-admin")), h("admin-hpke")),
        account("t-admin"),
        account("t-sender"),
        account("t-custodian"),
        account("t-patient"),
        account("t-doctor"),
        lambda address: chain.fund(address, 10 * ETH) and None,
    )


def _funded(chain: EmbeddedChain, who: LocalAccount) -> LocalAccount:
    chain.fund(who.address, 10 * ETH)
    return who


@pytest.mark.parametrize("snapshot", [False, True], ids=["journal-only", "snapshot"])
def test_restart_replays_the_journal(tmp_path: Path, cast: Cast, snapshot: bool) -> None:
    """The same chain after a restart: from the journal alone, or from the snapshot the
    clean close wrote (nothing left to replay)."""
    journal = tmp_path / "ledger" / "chain.journal"
    first = open_chain("embedded", journal=journal, clock=FakeClock(), sleep=lambda _s: None)
    assert isinstance(first, EmbeddedChain)
    ledger = setup_world(first, cast)
    height = first.block_height()
    hashes = [bytes(first.w3.eth.get_block(n)["hash"]) for n in range(height + 1)]
    records = ledger.records_of(cast.patient.address)
    balances = [first.balance(a.address) for a in (cast.admin, cast.sender, cast.patient)]
    events = ledger.events_since(0)
    first.close()

    assert journal.with_suffix(".snapshot").exists()
    if not snapshot:
        journal.with_suffix(".snapshot").unlink()
    # A different clock after the restart must not matter: replay uses the recorded times.
    second = EmbeddedChain(journal, clock=lambda: 1.0, sleep=lambda _s: None)
    assert (second.restored, second.replayed) == ((height, 0) if snapshot else (0, height))
    again = Ledger(second, ledger.address)
    assert second.block_height() == height
    assert [bytes(second.w3.eth.get_block(n)["hash"]) for n in range(height + 1)] == hashes
    assert again.records_of(cast.patient.address) == records
    assert [second.balance(a.address) for a in (cast.admin, cast.sender, cast.patient)] == balances
    assert again.events_since(0) == events
    assert again.has_access(h("r1"), cast.doctor.address)
    # Funding is idempotent across restarts, and the chain carries on from where it was.
    assert not second.fund(cast.sender.address, 10 * ETH)
    again.anchor_study(
        cast.sender, cast.patient.address, h("r2"), h("root2"), CID, b"c", study_id=h("s1")
    )
    second.close()

    third = EmbeddedChain(journal, sleep=lambda _s: None)
    assert third.block_height() == height + 1
    assert len(Ledger(third, ledger.address).records_of(cast.patient.address)) == 2
    third.close()


def test_snapshots_follow_the_chain_and_a_crash_replays_only_the_tail(
    tmp_path: Path, cast: Cast
) -> None:
    journal = tmp_path / "chain.journal"
    chain = EmbeddedChain(journal, clock=FakeClock(), sleep=lambda _s: None, snapshot_every=4)
    ledger = setup_world(chain, cast)  # 9 blocks: snapshots after blocks 4 and 8
    assert read_snapshot(journal.with_suffix(".snapshot")).height == 8  # type: ignore[union-attr]
    ledger.anchor_study(
        cast.sender, cast.patient.address, h("r2"), h("root2"), CID, b"c", study_id=h("s1")
    )
    height = chain.block_height()
    records = ledger.records_of(cast.patient.address)
    # No close: what kill -9 leaves. The journal has every block, the snapshot the first 8.
    reopened = EmbeddedChain(journal, clock=FakeClock(), sleep=lambda _s: None)
    assert (reopened.restored, reopened.replayed) == (8, height - 8)
    again = Ledger(reopened, ledger.address)
    assert again.records_of(cast.patient.address) == records
    assert reopened.block_hash(height) == chain.block_hash(height)
    again.anchor_study(
        cast.sender, cast.patient.address, h("r3"), h("root3"), CID, b"c", study_id=h("s1")
    )
    reopened.close()  # (the first instance is never closed: it "crashed")
    third = EmbeddedChain(journal, sleep=lambda _s: None)
    assert (third.restored, third.replayed) == (height + 1, 0)
    assert len(Ledger(third, ledger.address).records_of(cast.patient.address)) == 3
    hashes = [third.block_hash(n) for n in range(height + 2)]
    third.close()
    # The blocks mined on a chain loaded from a snapshot replay from the journal alone, to
    # the same hashes (a divergence would raise LedgerConfigError here).
    journal.with_suffix(".snapshot").unlink()
    fourth = EmbeddedChain(journal, sleep=lambda _s: None)
    assert (fourth.restored, fourth.replayed) == (0, height + 1)
    assert [fourth.block_hash(n) for n in range(height + 2)] == hashes
    fourth.close()


def _other_snapshot(tmp_path: Path, cast: Cast) -> bytes:
    """A valid snapshot of a different chain (one funding block)."""
    other = tmp_path / "other" / "chain.journal"
    chain = EmbeddedChain(other, clock=FakeClock(), sleep=lambda _s: None)
    chain.fund(cast.doctor.address, ETH)
    chain.close()
    return other.with_suffix(".snapshot").read_bytes()


@pytest.mark.parametrize(
    "damage", ["flipped byte", "cut short", "another chain's", "ahead", "unreadable database"]
)
def test_a_snapshot_that_disagrees_with_the_journal_is_ignored(
    tmp_path: Path, cast: Cast, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    journal = tmp_path / "chain.journal"
    chain = EmbeddedChain(journal, clock=FakeClock(), sleep=lambda _s: None)
    ledger = setup_world(chain, cast)
    height = chain.block_height()
    records = ledger.records_of(cast.patient.address)
    chain.close()
    path = journal.with_suffix(".snapshot")
    data = bytearray(path.read_bytes())
    if damage == "flipped byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "cut short":
        del data[-100:]
    elif damage == "another chain's":
        data = bytearray(_other_snapshot(tmp_path, cast))
    elif damage == "unreadable database":  # checksum and head right, database empty
        snap = read_snapshot(path)
        assert snap is not None
        write_snapshot(path, snap.height, snap.head_hash, {})
        data = bytearray(path.read_bytes())
    else:  # a snapshot of a longer chain than this journal holds
        longer = tmp_path / "longer" / "chain.journal"
        longer.parent.mkdir()
        longer.write_bytes(journal.read_bytes())
        grown = EmbeddedChain(longer, clock=FakeClock(), sleep=lambda _s: None)
        grown.fund(cast.doctor.address, ETH)
        grown.close()
        data = bytearray(longer.with_suffix(".snapshot").read_bytes())
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="ztbridge.ledger"):
        reopened = EmbeddedChain(journal, sleep=lambda _s: None)
    assert (reopened.restored, reopened.replayed) == (0, height)
    assert "replaying the whole journal" in caplog.text
    assert Ledger(reopened, ledger.address).records_of(cast.patient.address) == records
    reopened.close()  # and a good snapshot replaces the bad one
    assert EmbeddedChain(journal, sleep=lambda _s: None).restored == height


def test_a_snapshot_from_another_genesis_is_not_taken_for_this_chain(
    tmp_path: Path, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If this code's genesis changed (a dependency upgrade), a full replay diverges and says
    so; the snapshot, which carries its own genesis, must not hide that."""
    journal = tmp_path / "chain.journal"
    chain = EmbeddedChain(journal, clock=FakeClock(), sleep=lambda _s: None)
    chain.fund(cast.admin.address, ETH)
    chain.close()
    monkeypatch.setattr(embedded, "GENESIS_TIMESTAMP", embedded.GENESIS_TIMESTAMP + 1)
    with pytest.raises(LedgerConfigError, match="diverged"):
        EmbeddedChain(journal, sleep=lambda _s: None)


def test_torn_tail_is_cut_and_corruption_refused(tmp_path: Path, cast: Cast) -> None:
    journal = tmp_path / "chain.journal"
    chain = EmbeddedChain(journal, clock=FakeClock(), sleep=lambda _s: None)
    chain.fund(cast.admin.address, ETH)
    chain.fund(cast.sender.address, ETH)
    chain.close()
    size = journal.stat().st_size
    with journal.open("ab") as fh:
        fh.write(b"\x00\x00\x01\x00partial")
    journal.with_suffix(".snapshot").unlink()  # the journal alone
    reopened = EmbeddedChain(journal, sleep=lambda _s: None)
    assert reopened.replayed == 2 and journal.stat().st_size == size
    reopened.close()

    data = bytearray(journal.read_bytes())
    data[-5] ^= 0xFF
    journal.write_bytes(bytes(data))
    with pytest.raises(LedgerConfigError):
        EmbeddedChain(journal, sleep=lambda _s: None)
