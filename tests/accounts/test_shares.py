"""Share and revoke on the embedded chain: a patient's own key signs the grant, the doctor
reads with the doctor's own key while shared, a doctor cannot share on, and a revoke ends
both the chain's access and the doctor's wraps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.access import Action, decide
from gateway.accounts import totp
from gateway.accounts.facts import facts_for
from gateway.accounts.keyprovider import key_provider
from gateway.accounts.links import link_patient
from gateway.accounts.onchain import sync_users
from gateway.accounts.sessions import SessionView
from gateway.accounts.shares import (
    AccessDeniedError,
    expired_shares,
    revoke_share,
    share_study,
    shares_of,
)
from gateway.clock import FixedClock
from gateway.dataset import split_part10
from gateway.errors import KeyUnavailableError
from gateway.importer import import_file
from gateway.index.models import instances
from gateway.retrieve import InstanceRef, retrieve
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.accounts.conftest import CHEAP, PASSWORD
from tests.support.dicomgen import make_ct_series

ADDR = "192.0.2.9"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    settings = load_settings(home=tmp_path / "home", custodian_passphrase="p" * 20, accounts=CHEAP)
    g = open_gateway(settings, clock=FixedClock(datetime(2026, 12, 2, 12, tzinfo=UTC)))
    yield g
    g.close()


def _login(gw: Gateway, name: str, secret: str) -> SessionView:
    pending = gw.users.login_password(name, PASSWORD, ADDR)
    session = gw.users.login_second_factor(pending, totp.code_at(secret, gw.clock.now()), ADDR)
    return gw.users.sessions.check(session)


def test_share_read_revoke(gw: Gateway, tmp_path: Path) -> None:
    anchoring = gw.anchoring
    assert anchoring is not None
    ann = gw.users.provision("ann", "patient", "Ann", PASSWORD, "t")
    doc = gw.users.provision("drlee", "doctor", "Dr Grace Lee", PASSWORD, "t")
    link_patient(gw.patient_links, ann.account, "PID-A", None, anchoring, None, "t", gw.audit)
    series = make_ct_series(tmp_path / "ct", 2, rows=16, columns=16, patient_id="PID-A")
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    study = series.study_uid
    session = anchoring.connect()
    try:
        ledger = session.ledger
        sync_users(gw.db, ledger, anchoring.accounts.admin, gw.audit)
        anchoring.seal_studies({study})
        assert anchoring.send_pending(session).batches == 1
        sid = anchoring.study_id(study)
        ann_account, doctor = gw.users.get("ann"), gw.users.get("drlee")
        assert ledger.study_owner(sid) == ann_account.address  # anchored to the patient
        assert [d.username for d in gw.users.find_doctors("grace")] == ["drlee"]

        ann_view, doc_view = (
            _login(gw, "ann", ann.totp_secret),
            _login(gw, "drlee", doc.totp_secret),
        )
        with pytest.raises(AccessDeniedError) as caught:  # not the doctor's to share
            share_study(gw.db, ledger, sid, doc_view, doctor, study, None, gw.clock, gw.audit)
        assert caught.value.decision.status == 404
        expires = gw.clock.now() + timedelta(days=7)
        share = share_study(
            gw.db, ledger, sid, ann_view, doctor, study, expires, gw.clock, gw.audit
        )
        assert share.tx_hash and ledger.has_study_access(sid, doctor.address)
        assert [s.doctor_id for s in shares_of(gw.db, study)] == [doctor.id]
        assert ledger.study_grant(sid, doctor.address)[0]

        now = gw.clock.now()
        assert decide(facts_for(gw.db, doc_view, Action.READ, study, now)).allowed
        with pytest.raises(AccessDeniedError) as caught:  # a doctor cannot share further
            share_study(gw.db, ledger, sid, doc_view, doctor, study, None, gw.clock, gw.audit)
        assert caught.value.decision.status == 403
        with gw.db.read() as conn:
            rows = conn.execute(select(instances).where(instances.c.study_uid == study)).all()
        sent = {split_part10(f.read_bytes()).sop_instance: f for f in series.files}
        doctor_keys = key_provider(gw.db, doc_view)
        for row in rows:
            got = split_part10(retrieve(InstanceRef.from_row(row), gw.store, doctor_keys).read())
            assert got.dataset == split_part10(sent[got.sop_instance].read_bytes()).dataset
        assert expired_shares(gw.db, now) == []
        assert len(expired_shares(gw.db, now + timedelta(days=8))) == 1
        assert not decide(
            facts_for(gw.db, doc_view, Action.READ, study, now + timedelta(days=8))
        ).allowed

        assert revoke_share(gw.db, ledger, sid, ann_view, doctor, study, gw.clock, gw.audit)
        assert not ledger.has_study_access(sid, doctor.address)
        denied = decide(facts_for(gw.db, doc_view, Action.READ, study, gw.clock.now()))
        assert (denied.allowed, denied.status) == (False, 404)
        with pytest.raises(KeyUnavailableError):
            key_provider(gw.db, doc_view).study_key(InstanceRef.from_row(rows[0]).key_id)
        assert not revoke_share(gw.db, ledger, sid, ann_view, doctor, study, gw.clock, gw.audit)
    finally:
        session.close()
    kinds = [e.kind for e in gw.audit.entries()]
    assert (
        kinds.count("user.registered") == 2 and "study.shared" in kinds and "study.revoked" in kinds
    )
