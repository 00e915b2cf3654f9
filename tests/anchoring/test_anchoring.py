"""Sealing batches and sending the outbox in process, on a real embedded chain.

The gateway is opened as ``ztbridge up`` would open it (real index, store, keys and contract);
only the clock is pinned so "idle for N seconds" needs no sleeping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gateway import crypto
from gateway.anchoring.manifest import Capsule, Manifest, capsule_info, manifest_key_info
from gateway.anchoring.outbox import ANCHORED, CONFLICT, PENDING, outbox_counts
from gateway.anchoring.service import Anchoring
from gateway.anchoring.session import Session
from gateway.anchoring.worker import AnchorWorker
from gateway.clock import FixedClock
from gateway.errors import AuditError
from gateway.importer import import_file
from gateway.index.models import anchor_batch_members, anchor_batches, audit_anchors, study_keys
from gateway.keys import study_key_info, unlock_custodian
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series

PASSPHRASE = "anchoring-test-passphrase"


def open_gw(home: Path, clock: FixedClock, **ledger: Any) -> Gateway:
    settings = load_settings(
        home=home,
        custodian_passphrase=PASSPHRASE,
        ledger={"anchor_idle_seconds": 30.0, **ledger},
    )
    return open_gateway(settings, clock=clock)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def gw(tmp_path: Path, clock: FixedClock) -> Iterator[Gateway]:
    g = open_gw(tmp_path / "home", clock)
    yield g
    g.close()


def anchoring_of(gw: Gateway) -> Anchoring:
    assert gw.anchoring is not None
    return gw.anchoring


def ingest_study(gw: Gateway, folder: Path, count: int) -> str:
    series = make_ct_series(folder, count, rows=32, columns=32)
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    return series.study_uid


def batch_rows(gw: Gateway) -> list[Any]:
    with gw.db.read() as conn:
        return list(conn.execute(select(anchor_batches).order_by(anchor_batches.c.id)).all())


def members(gw: Gateway, batch_id: int) -> int:
    with gw.db.read() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(anchor_batch_members)
                .where(anchor_batch_members.c.batch_id == batch_id)
            ).scalar_one()
        )


@pytest.fixture
def session(gw: Gateway) -> Iterator[Session]:
    s = anchoring_of(gw).connect()
    yield s
    s.close()


def test_ended_association_seals_at_once_idle_study_later(
    gw: Gateway, clock: FixedClock, tmp_path: Path
) -> None:
    anchoring = anchoring_of(gw)
    a = ingest_study(gw, tmp_path / "a", 3)
    b = ingest_study(gw, tmp_path / "b", 2)
    anchoring.association_ended({a})
    (sealed,) = anchoring.seal_due()
    assert (sealed.study_uid, sealed.instance_count, sealed.batch_no) == (a, 3, 1)
    assert anchoring.seal_due() == []  # B is still arriving
    clock.advance(30)
    (later,) = anchoring.seal_due()
    assert (later.study_uid, later.instance_count) == (b, 2)
    rows = batch_rows(gw)
    assert [(r.state, r.instance_count) for r in rows] == [(PENDING, 3), (PENDING, 2)]
    assert [members(gw, r.id) for r in rows] == [3, 2]
    # The record id is a keyed hash: nothing on-chain is derived from the UID alone.
    assert rows[0].record_id != hashlib.sha256(a.encode()).hexdigest()
    assert a not in rows[0].record_id and a.encode() not in bytes(rows[0].capsule)
    # More instances of A later make a second batch of A, never a rewrite of the first.
    ingest_study_more = make_ct_series(tmp_path / "a2", 1, rows=32, columns=32, study_uid=a)
    for f in ingest_study_more.files:
        assert import_file(gw.ingestor, f, "test").ok
    anchoring.association_ended({a})
    (again,) = anchoring.seal_due()
    assert (again.study_uid, again.batch_no, again.instance_count) == (a, 2, 1)


def test_capsule_and_manifest_open_with_the_custodian(gw: Gateway, tmp_path: Path) -> None:
    anchoring = anchoring_of(gw)
    study = ingest_study(gw, tmp_path / "a", 4)
    (batch,) = anchoring.seal_studies({study})
    (row,) = batch_rows(gw)
    pair = unlock_custodian(gw.keys_dir, PASSPHRASE)
    capsule = Capsule.from_bytes(
        crypto.unwrap(pair, bytes(row.capsule), capsule_info(batch.record_id))
    )
    assert capsule.manifest_cid == row.manifest_cid == batch.manifest_cid
    # The custodian's own wrap of the manifest key opens the same manifest.
    wrapped = crypto.unwrap(
        pair, bytes(row.manifest_key_wrap), manifest_key_info(row.manifest_key_id)
    )
    assert wrapped == capsule.manifest_key
    manifest = Manifest.from_bytes(
        crypto.open_sealed(capsule.manifest_key, gw.store.get(capsule.manifest_cid))
    )
    assert manifest.root == batch.merkle_root and manifest.root.hex() == row.merkle_root
    assert (manifest.study_uid, len(manifest.entries)) == (study, 4)
    # The capsule carries the owner's wrap of the study key (a patient owner needs it).
    with gw.db.read() as conn:
        key_row = conn.execute(select(study_keys)).one()
    study_key = crypto.unwrap(pair, key_row.custodian_wrap, study_key_info(key_row.key_id))
    assert capsule.version == 2 and capsule.study_keys == ()
    assert capsule.open_study_keys(pair) == ((bytes.fromhex(key_row.key_id), study_key),)
    assert [w.key_id for w in manifest.key_wraps] == [key_row.key_id]


@pytest.mark.parametrize("forget", ["restart", "idle-eviction"])
def test_capsule_holds_the_study_keys_whatever_happened_before_sealing(
    tmp_path: Path, clock: FixedClock, forget: str
) -> None:
    """The key cache is gone before the batch is sealed (a restart, or the study went idle
    and its key was evicted): the capsule still opens every instance of the batch."""
    home = tmp_path / "home"
    gw = open_gw(home, clock)
    try:
        study = ingest_study(gw, tmp_path / "a", 2)
        if forget == "restart":  # "crash" before any batch was sealed
            gw.close()
            gw = open_gw(home, clock)
        clock.advance(gw.settings.ingest.study_key_idle_seconds + 31)
        assert gw.keys.forget_idle() == (1 if forget == "idle-eviction" else 0)
        (batch,) = anchoring_of(gw).seal_due()
        assert (batch.study_uid, batch.instance_count) == (study, 2)
        pair = unlock_custodian(gw.keys_dir, PASSPHRASE)
        (row,) = batch_rows(gw)
        capsule = Capsule.from_bytes(
            crypto.unwrap(pair, bytes(row.capsule), capsule_info(batch.record_id))
        )
        keys = {key_id.hex(): key for key_id, key in capsule.open_study_keys(pair)}
        with gw.db.read() as conn:
            (key_row,) = conn.execute(select(study_keys)).all()
        assert list(keys) == [key_row.key_id]
        manifest = Manifest.from_bytes(
            crypto.open_sealed(capsule.manifest_key, gw.store.get(row.manifest_cid))
        )
        for entry in manifest.entries:  # the capsule alone opens every image of the batch
            plain = crypto.open_sealed(keys[entry.key_id], gw.store.get(entry.cid))
            assert len(plain) == entry.size
        (wrap,) = manifest.key_wraps  # and the custodian's wraps are in the manifest too
        assert crypto.unwrap(pair, wrap.wrap, study_key_info(wrap.key_id)) == keys[wrap.key_id]
    finally:
        gw.close()


def test_lost_receipt_is_not_anchored_twice(gw: Gateway, session: Session, tmp_path: Path) -> None:
    anchoring = anchoring_of(gw)
    study = ingest_study(gw, tmp_path / "a", 2)
    (batch,) = anchoring.seal_studies({study})
    (row,) = batch_rows(gw)
    # The first attempt was mined, but its receipt never came back (node restarted).
    mined = session.ledger.anchor_study(
        anchoring.accounts.sender,
        row.owner,
        batch.record_id,
        batch.merkle_root,
        row.manifest_cid,
        bytes(row.capsule),
        study_id=anchoring.study_id(study),
    )
    report = anchoring.send_pending(session)
    assert report.batches == 1
    (row,) = batch_rows(gw)
    assert row.state == ANCHORED
    assert (row.tx_hash, row.block_number) == ("0x" + mined.tx_hash.hex(), mined.block_number)
    custodian = anchoring.accounts.custodian_address
    assert session.ledger.record_count(custodian) == 1
    assert anchoring.send_pending(session).batches == 0


def test_conflicting_record_is_flagged_and_never_retried(
    gw: Gateway, session: Session, tmp_path: Path
) -> None:
    anchoring = anchoring_of(gw)
    study = ingest_study(gw, tmp_path / "a", 1)
    (batch,) = anchoring.seal_studies({study})
    (row,) = batch_rows(gw)
    session.ledger.anchor_study(
        anchoring.accounts.sender,
        row.owner,
        batch.record_id,
        b"\x99" * 32,  # someone else's root under our record id
        row.manifest_cid,
        b"capsule",
        study_id=anchoring.study_id(study),
    )
    anchoring.send_pending(session)
    (row,) = batch_rows(gw)
    assert row.state == CONFLICT and "other content" in row.last_error
    assert outbox_counts(gw.db).batches_conflict == 1
    assert anchoring.send_pending(session).batches == 0
    assert session.ledger.record_count(anchoring.accounts.custodian_address) == 1


def test_audit_ranges_tile_the_log_and_survive_a_lost_receipt(
    gw: Gateway, session: Session, tmp_path: Path
) -> None:
    anchoring = anchoring_of(gw)
    ingest_study(gw, tmp_path / "a", 3)
    assert anchoring.send_pending(session, force_audit=True).audit_ranges == 1
    ingest_study(gw, tmp_path / "b", 2)
    head = anchoring.outbox.audit_head()
    (first,) = session.ledger.audit_anchors()
    # The next range is queued and mined, but its receipt is lost.
    pending = anchoring.outbox.queue_audit(session.deployment.id, first.to_seq + 1, head)
    session.ledger.anchor_audit(
        anchoring.accounts.sender, pending.root, pending.from_seq, pending.to_seq
    )
    assert anchoring.send_pending(session, force_audit=True).audit_ranges == 1
    anchors = session.ledger.audit_anchors()
    assert [(a.from_seq, a.to_seq) for a in anchors] == [
        (1, first.to_seq),
        (first.to_seq + 1, head),
    ]
    with gw.db.read() as conn:
        states = [r.state for r in conn.execute(select(audit_anchors.c.state))]
    assert states == [ANCHORED, ANCHORED]
    # A range with entries missing cannot even be queued.
    with pytest.raises(AuditError):
        anchoring.outbox.queue_audit(session.deployment.id, head + 1, head + 5)


def test_idle_sweep_never_rescans_everything(
    gw: Gateway, clock: FixedClock, tmp_path: Path
) -> None:
    anchoring = anchoring_of(gw)
    ingest_study(gw, tmp_path / "a", 2)
    clock.advance(31)
    assert len(anchoring.seal_due()) == 1
    assert anchoring.seal_due() == []
    # A study ingested without any notification (a future ingest path) is still found.
    ingest_study(gw, tmp_path / "b", 1)
    clock.advance(31)
    assert [b.instance_count for b in anchoring.seal_due()] == [1]


def test_sending_yields_to_arriving_instances_for_a_bounded_time(
    tmp_path: Path, clock: FixedClock
) -> None:
    gw = open_gw(tmp_path / "home", clock, defer_while_busy_seconds=3.0, poll_seconds=1.0)
    try:
        anchoring = anchoring_of(gw)
        worker = AnchorWorker(anchoring)
        anchoring.seal_due()
        assert anchoring.ingest_moving  # just started: hold back for one poll
        clock.advance(1.0)
        anchoring.seal_due()
        assert not anchoring.ingest_moving  # nothing arrived meanwhile
        held = []
        for n in range(5):  # an instance arrives every poll: continuous traffic
            ingest_study(gw, tmp_path / f"s{n}", 1)
            anchoring.seal_due()
            assert anchoring.ingest_moving
            held.append(worker._yield_to_ingest(clock.monotonic()))
            clock.advance(1.0)
        assert held == [True, True, True, False, True]  # sent once the 3 s were up
        anchoring.seal_due()  # a quiet poll: send at once
        assert not anchoring.ingest_moving
        assert not worker._yield_to_ingest(clock.monotonic())
    finally:
        gw.close()
