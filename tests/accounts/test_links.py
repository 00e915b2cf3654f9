"""Patient links through the real ingest pipeline (ledger off: the chain is in the
integration test): new studies are sealed to the linked patient, earlier ones re-sealed at
link time, each patient opens only their own, and ``decide`` gets its facts from the index."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from gateway.access import Action, Visibility, decide
from gateway.accounts import totp
from gateway.accounts.errors import AccountExistsError
from gateway.accounts.facts import facts_for, study_facts, visible_studies
from gateway.accounts.keyprovider import UserKeyProvider, key_provider
from gateway.accounts.links import link_patient
from gateway.accounts.sessions import SessionView
from gateway.clock import FixedClock
from gateway.dataset import split_part10
from gateway.errors import ConfigError, InvalidInputError, KeyUnavailableError, RetrieveError
from gateway.importer import import_file
from gateway.index.models import instances, shares
from gateway.keys import unlock_custodian
from gateway.retrieve import CustodianKeys, InstanceRef, retrieve
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.accounts.conftest import CHEAP, PASSWORD
from tests.support.dicomgen import make_ct_series

PHRASE = "links-test-passphrase"
ADDR = "192.0.2.5"


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    settings = load_settings(
        home=tmp_path / "home", custodian_passphrase=PHRASE, accounts=CHEAP,
        ledger={"enabled": False},
    )  # fmt: skip
    g = open_gateway(settings, clock=FixedClock(datetime(2026, 12, 2, 12, tzinfo=UTC)))
    yield g
    g.close()


def _push(gw: Gateway, folder: Path, patient_id: str, count: int = 3) -> tuple[str, list[Path]]:
    series = make_ct_series(folder, count, rows=16, columns=16, patient_id=patient_id)
    for f in series.files:
        assert import_file(gw.ingestor, f, "test").ok
    return series.study_uid, series.files


def _login(gw: Gateway, name: str, secret: str) -> SessionView:
    users = gw.users
    pending = users.login_password(name, PASSWORD, ADDR)
    session = users.login_second_factor(pending, totp.code_at(secret, gw.clock.now()), ADDR)
    return users.sessions.check(session)


def _refs(gw: Gateway, study: str) -> list[InstanceRef]:
    with gw.db.read() as conn:
        rows = conn.execute(select(instances).where(instances.c.study_uid == study)).all()
    return [InstanceRef.from_row(r) for r in rows]


def _all_exact(gw: Gateway, study: str, files: list[Path], keys: object) -> bool:
    sent = {split_part10(f.read_bytes()).sop_instance: split_part10(f.read_bytes()).dataset
            for f in files}  # fmt: skip
    got = {}
    for ref in _refs(gw, study):
        plain = split_part10(retrieve(ref, gw.store, keys).read())  # type: ignore[arg-type]
        got[plain.sop_instance] = plain.dataset
    return got == sent


def test_linked_patients_open_their_own_studies_only(gw: Gateway, tmp_path: Path) -> None:
    custodian = unlock_custodian(gw.keys_dir, PHRASE)
    ann = gw.users.provision("ann", "patient", "Ann", PASSWORD, "t")
    bob = gw.users.provision("bob", "patient", "Bob", PASSWORD, "t")
    doc = gw.users.provision("doc", "doctor", "Dr Doc", PASSWORD, "t")
    earlier, earlier_files = _push(gw, tmp_path / "early", "PID-ANN")
    with pytest.raises(ConfigError, match="CUSTODIAN_PASSPHRASE"):
        link_patient(gw.patient_links, ann.account, "PID-ANN", None, None, None, "t", gw.audit)
    report = link_patient(
        gw.patient_links, ann.account, "PID-ANN", None, None, custodian, "cli:admin", gw.audit
    )
    assert report.studies == [earlier] and report.wraps_added == 1
    link_patient(gw.patient_links, bob.account, "PID-BOB", "SITE-B", None, None, "t", gw.audit)
    later, later_files = _push(gw, tmp_path / "late", "PID-ANN")
    bobs, _ = _push(gw, tmp_path / "bob", "PID-BOB")  # no issuer sent: not Bob's (issuer B)

    ann_view = _login(gw, "ann", ann.totp_secret)
    bob_view = _login(gw, "bob", bob.totp_secret)
    doc_view = _login(gw, "doc", doc.totp_secret)
    ann_keys = key_provider(gw.db, ann_view)
    assert _all_exact(gw, earlier, earlier_files, ann_keys)  # re-sealed at link time
    assert _all_exact(gw, later, later_files, ann_keys)  # sealed at ingest
    assert _all_exact(gw, later, later_files, CustodianKeys(gw.db, custodian))  # still
    bob_keys = key_provider(gw.db, bob_view)
    with pytest.raises(KeyUnavailableError):
        bob_keys.study_key(_refs(gw, later)[0].key_id)
    with pytest.raises(RetrieveError):
        retrieve(_refs(gw, later)[0], gw.store, bob_keys).read()
    with pytest.raises(KeyUnavailableError):
        key_provider(gw.db, ann_view).study_key(_refs(gw, bobs)[0].key_id)

    now = gw.clock.now()
    assert visible_studies(gw.db, ann_view, now) == sorted([earlier, later])
    assert visible_studies(gw.db, bob_view, now) == []  # Bob's link names issuer SITE-B
    assert visible_studies(gw.db, doc_view, now) == []
    assert decide(facts_for(gw.db, ann_view, Action.READ, later, now)).allowed
    denied = decide(facts_for(gw.db, bob_view, Action.READ, later, now))
    missing = decide(facts_for(gw.db, bob_view, Action.READ, "1.2.3.4.5.404", now))
    assert not denied.allowed and denied.visibility is Visibility.HIDDEN and denied.status == 404
    assert (denied.status, denied.visibility) == (missing.status, missing.visibility)
    assert decide(facts_for(gw.db, None, Action.READ, later, now)).status == 401
    assert study_facts(gw.db, bobs) == study_facts(gw.db, bobs)  # custodian's: owner None
    assert study_facts(gw.db, bobs).owner_id is None  # type: ignore[union-attr]

    # a share row (what a mined grant writes) is seen on the next request, not cached
    assert not decide(facts_for(gw.db, doc_view, Action.READ, later, now)).allowed
    with gw.db.write() as conn:
        conn.execute(insert(shares).values(
            study_uid=later, doctor_id=doc.account.id, patient_id=ann.account.id,
            granted_at=now.isoformat(), expires_at=(now + timedelta(days=1)).isoformat(),
        ))  # fmt: skip
    assert decide(facts_for(gw.db, doc_view, Action.READ, later, now)).allowed
    assert visible_studies(gw.db, doc_view, now) == [later]
    assert visible_studies(gw.db, doc_view, now + timedelta(days=2)) == []
    assert decide(facts_for(gw.db, doc_view, Action.SHARE, later, now)).status == 403
    assert not decide(
        facts_for(gw.db, doc_view, Action.READ, later, now + timedelta(days=2))
    ).allowed
    with gw.db.write() as conn:
        conn.execute(shares.delete())
    assert not decide(facts_for(gw.db, doc_view, Action.READ, later, now)).allowed


def test_link_rules(gw: Gateway) -> None:
    ann = gw.users.provision("ann", "patient", "", PASSWORD, "t").account
    eve = gw.users.provision("eve", "patient", "", PASSWORD, "t").account
    doc = gw.users.provision("doc", "doctor", "", PASSWORD, "t").account
    links = gw.patient_links
    with pytest.raises(InvalidInputError, match="only patient"):
        links.add(doc, "PID-1", None)
    links.add(ann, "PID-1", "SITE-A")
    links.add(ann, "PID-2", None)  # several IDs per account
    links.add(eve, "PID-1", "SITE-B")  # the same ID at another site is someone else
    with pytest.raises(AccountExistsError):
        links.add(eve, "PID-1", "SITE-A")
    with pytest.raises(AccountExistsError):
        links.add(eve, "PID-1", None)  # "any issuer" would overlap Ann's
    with pytest.raises(AccountExistsError):
        links.add(ann, "PID-2", None)
    assert [(x.patient_id, x.issuer) for x in links.of(ann.id)] == [
        ("PID-1", "SITE-A"), ("PID-2", None),
    ]  # fmt: skip


def test_provider_caches_nothing_across_requests(gw: Gateway, tmp_path: Path) -> None:
    ann = gw.users.provision("ann", "patient", "", PASSWORD, "t")
    link_patient(gw.patient_links, ann.account, "PID-A", None, None, None, "t", gw.audit)
    study, _ = _push(gw, tmp_path / "a", "PID-A", 1)
    view = _login(gw, "ann", ann.totp_secret)
    key_id = _refs(gw, study)[0].key_id
    assert len(UserKeyProvider(gw.db, view.keys).study_key(key_id)) == 32  # type: ignore[arg-type]
    from gateway.index.models import key_wraps

    with gw.db.write() as conn:  # e.g. a revoke deleted the wrap
        conn.execute(key_wraps.delete().where(key_wraps.c.recipient == ann.account.recipient))
    with pytest.raises(KeyUnavailableError):
        key_provider(gw.db, view).study_key(key_id)
