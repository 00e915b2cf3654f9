"""Patients end to end: provisioned with the CLI, linked, a CT series pushed with storescu,
then the patient logs in (password + a pyotp code) and retrieves every instance with their
own key; a study pushed before its patient's link becomes theirs on-chain at the link; the
custodian still opens everything; another patient opens nothing of it."""

from __future__ import annotations

from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select

from gateway.access import Action, Visibility, decide
from gateway.accounts.facts import facts_for
from gateway.accounts.keyprovider import key_provider
from gateway.accounts.sessions import SessionView
from gateway.dataset import split_part10
from gateway.errors import KeyUnavailableError
from gateway.index.models import instances
from gateway.keys import unlock_custodian
from gateway.retrieve import CustodianKeys, InstanceRef, KeyProvider, retrieve
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import PASSPHRASE, GatewayProcess, make_gateway, running, storescu
from tests.support.ledger import wait_outbox

pytestmark = pytest.mark.integration

CHEAP = {"argon2_memory_kib": 8, "argon2_time_cost": 1, "argon2_parallelism": 1}
CHEAP_ENV = {f"ZTBRIDGE_ACCOUNTS__{k.upper()}": str(v) for k, v in CHEAP.items()}


def _provision(gw: GatewayProcess, tmp: Path, name: str) -> tuple[str, str]:
    """(password, TOTP secret) of a patient made with --password-file/--totp-secret-file."""
    password = f"{name} rides the blue tram home"
    (tmp / f"{name}.pw").write_text(password + "\n")
    out = gw.cli(
        "user", "add", "--username", name, "--role", "patient", "--name", name.title(),
        "--password-file", str(tmp / f"{name}.pw"),
        "--totp-secret-file", str(tmp / f"{name}.totp"),
    )  # fmt: skip
    said = " ".join(out.stdout.split())
    assert "provisioned" in said and "registry: up to date" in said
    secret_file = tmp / f"{name}.totp"
    assert secret_file.stat().st_mode & 0o077 == 0  # owner-only
    return password, secret_file.read_text().strip()


def _login(g: Gateway, name: str, password: str, secret: str) -> SessionView:
    pending = g.users.login_password(name, password, "127.0.0.1")
    session = g.users.login_second_factor(pending, pyotp.TOTP(secret).now(), "127.0.0.1")
    return g.users.sessions.check(session)


def _exact(g: Gateway, study: str, files: list[Path], keys: KeyProvider) -> None:
    with g.db.read() as conn:
        rows = conn.execute(select(instances).where(instances.c.study_uid == study)).all()
    sent = {split_part10(f.read_bytes()).sop_instance: f.read_bytes() for f in files}
    assert len(rows) == len(files)
    for row in rows:
        got = split_part10(retrieve(InstanceRef.from_row(row), g.store, keys).read())
        assert got.dataset == split_part10(sent[got.sop_instance]).dataset


def test_patients_log_in_and_retrieve_their_own_studies(tmp_path: Path, dcmtk: None) -> None:
    gw = make_gateway(
        tmp_path,
        ZTBRIDGE_LEDGER__POLL_SECONDS="0.2",
        ZTBRIDGE_LEDGER__DEFER_WHILE_BUSY_SECONDS="0",
        **CHEAP_ENV,
    )
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    ann_pw, ann_secret = _provision(gw, tmp_path, "ann")
    bob_pw, bob_secret = _provision(gw, tmp_path, "bob")
    again = gw.cli(
        "user", "add", "--username", "cyd", "--role", "patient",
        "--password-file", str(tmp_path / "bob.pw"),
        "--totp-secret-file", str(tmp_path / "bob.totp"),
        check=False,
    )  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr  # never over an existing file
    linked = gw.cli("patient", "link", "--username", "ann", "--patient-id", "PID-ANN")
    assert "0 earlier study(ies)" in " ".join(linked.stdout.split())
    ann_ct = make_ct_series(tmp_path / "ann", 4, rows=64, columns=64, patient_id="PID-ANN")
    bob_ct = make_ct_series(tmp_path / "bob", 3, rows=64, columns=64, patient_id="PID-BOB")
    with running(gw):
        for series in (ann_ct, bob_ct):
            pushed = storescu(gw.port, series.files)
            assert pushed.returncode == 0, pushed.stderr
        wait_outbox(gw, anchored=2)
        log = " ".join(gw.log().split())
        assert "/enroll/" in log and "first administrator enrolls" in log
    # Bob's study arrived before his link: the ceremony re-seals it and moves its record.
    handed = gw.cli("patient", "link", "--username", "bob", "--patient-id", "PID-BOB",
                     check=False)  # fmt: skip
    assert handed.returncode == 0, handed.stderr
    said = " ".join(handed.stdout.split())  # rich wraps long lines
    assert "1 earlier study(ies) handed over, 1 record(s) moved on-chain" in said
    shown = gw.cli("user", "show", "bob").stdout
    assert "PID-BOB" in shown and "synced" in shown

    settings = load_settings(home=gw.home, custodian_passphrase=PASSPHRASE, accounts=CHEAP)
    g = open_gateway(settings, store_access="read")
    try:
        ann = _login(g, "ann", ann_pw, ann_secret)
        bob = _login(g, "bob", bob_pw, bob_secret)
        _exact(g, ann_ct.study_uid, ann_ct.files, key_provider(g.db, ann))
        _exact(g, bob_ct.study_uid, bob_ct.files, key_provider(g.db, bob))
        custodian = CustodianKeys(g.db, unlock_custodian(g.keys_dir, PASSPHRASE))
        _exact(g, ann_ct.study_uid, ann_ct.files, custodian)
        _exact(g, bob_ct.study_uid, bob_ct.files, custodian)
        with g.db.read() as conn:
            ann_key = conn.execute(
                select(instances.c.key_id).where(instances.c.study_uid == ann_ct.study_uid).limit(1)
            ).scalar_one()
        with pytest.raises(KeyUnavailableError):
            key_provider(g.db, bob).study_key(ann_key)
        now = g.clock.now()
        denied = decide(facts_for(g.db, bob, Action.READ, ann_ct.study_uid, now))
        assert (denied.allowed, denied.visibility, denied.status) == (False, Visibility.HIDDEN, 404)
        assert decide(facts_for(g.db, ann, Action.READ, ann_ct.study_uid, now)).allowed
        assert decide(facts_for(g.db, bob, Action.READ, bob_ct.study_uid, now)).allowed
        anchoring = g.anchoring
        assert anchoring is not None
        session = anchoring.connect(read_only=True)
        try:
            ledger = session.ledger
            ann_acct, bob_acct = g.users.get("ann"), g.users.get("bob")
            assert ledger.study_owner(anchoring.study_id(ann_ct.study_uid)) == ann_acct.address
            assert ledger.study_owner(anchoring.study_id(bob_ct.study_uid)) == bob_acct.address
            assert ledger.user(bob_acct.address).hpke_public_key == bob_acct.hpke_public
            assert ledger.chain.balance(bob_acct.address) > 0  # funded to sign its own grants
        finally:
            session.close()
    finally:
        g.close()
    gw.cli("user", "suspend", "bob")
    g = open_gateway(settings, store_access="read")
    try:
        assert g.anchoring is not None
        session = g.anchoring.connect(read_only=True)
        try:
            assert session.ledger.user(g.users.get("bob").address).suspended
        finally:
            session.close()
    finally:
        g.close()
