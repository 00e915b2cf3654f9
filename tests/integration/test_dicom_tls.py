"""DICOM TLS, client certificates and user identity with DCMTK's storescu as the modality.

Certificates are issued through the ``ztbridge`` CLI exactly as an administrator would; JWTs
are signed by OpenSSL. Every refusal is checked three ways: what the modality prints, the
gateway's log line naming the check, and the audit event.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.index.database import Database
from gateway.index.models import audit_events, instances
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, dcmtk, free_port, make_gateway
from tests.support.jwt_openssl import keypair, sign

pytestmark = pytest.mark.integration

CA_PASSPHRASE = "tls-test-ca-passphrase"
MR_PASSCODE = "mr01-passcode-1234"
ISSUER = "https://idp.hospital.test"


@dataclass
class Site:
    gw: GatewayProcess
    tls_port: int
    certs: Path
    files: list[Path]
    idp_key: Path
    other_idp_key: Path

    @property
    def ca(self) -> Path:
        return self.gw.home / "tls" / "ca.pem"

    def tls(self, name: str) -> list[str]:
        """storescu options for a TLS association with ``name``.pem / ``name``.key."""
        key, cert = self.certs / f"{name}.key", self.certs / f"{name}.pem"
        return ["+tls", str(key), str(cert), "+cf", str(self.ca)]

    def push(self, calling: str, *extra: str, tls: bool = True) -> str:
        port = self.tls_port if tls else self.gw.port
        done = dcmtk(
            "storescu",
            "-v",
            "-aet",
            calling,
            "-aec",
            "ZTBRIDGE",
            *extra,
            "127.0.0.1",
            str(port),
            *[str(f) for f in self.files],
            timeout=120,
        )
        return f"rc={done.returncode}\n{done.stdout}{done.stderr}"

    def jwt(self, name: str, key: Path, **claims: object) -> Path:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": "ZTBRIDGE", "sub": "US01", "iat": now, "exp": now + 300}
        body.update(claims)
        path = self.certs / f"{name}.jwt"
        path.write_text(sign(key, body))
        return path


def successes(out: str) -> int:
    """C-STORE successes in storescu's output (-v and -d print them differently)."""
    return max(out.count("Received Store Response (Success)"), out.count(": 0x0000: Success"))


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("tls")
    tls_port = free_port()
    env = {"ZTBRIDGE_TLS__PORT": str(tls_port), "ZTBRIDGE_CA_PASSPHRASE": CA_PASSPHRASE}
    gw = make_gateway(tmp, **env)
    certs = tmp / "certs"
    certs.mkdir()
    gw.cli("ca", "init", "--host", "localhost", "--host", "127.0.0.1")

    def add(ae: str, *options: str) -> None:
        gw.cli(
            "device", "add", "--posture-policy", "none", "--ae", ae, "--ip", "127.0.0.1", *options
        )

    add("CT01", "--require-tls", "--cert-out", str(certs / "ct01.pem"))
    (certs / "mr01.pass").write_text(MR_PASSCODE + "\n")
    add(
        "MR01",
        "--cert-out",
        str(certs / "mr01.pem"),
        "--user-identity",
        "passcode",
        "--passcode-file",
        str(certs / "mr01.pass"),
    )
    idp_key, idp_pub = keypair(tmp / "idp", "ed25519")
    other_idp_key, _ = keypair(tmp / "other-idp", "ed25519")
    add(
        "US01",
        "--cert-out",
        str(certs / "us01.pem"),
        "--user-identity",
        "jwt",
        "--jwt-key",
        str(idp_pub),
        "--jwt-issuer",
        ISSUER,
    )
    add("PLAIN01")  # no TLS: plain TCP keeps working for devices not moved yet
    # A passcode device later allowed plain TCP (as devices enrolled before TLS became the
    # default with a user identity were): its passcode must still not cross in clear.
    add(
        "MR02",
        "--cert-out",
        str(certs / "mr02.pem"),
        "--user-identity",
        "passcode",
        "--passcode-file",
        str(certs / "mr01.pass"),
    )
    gw.cli("device", "tls", "MR02", "--allow-plain")
    # Another gateway's CA issues a certificate for the same AE title: it must not work here.
    other = make_gateway(tmp, "other", ZTBRIDGE_CA_PASSPHRASE=CA_PASSPHRASE)
    other.cli("ca", "init", "--host", "localhost")
    other.cli(
        "device",
        "add",
        "--posture-policy",
        "none",
        "--ae",
        "CT01",
        "--ip",
        "127.0.0.1",
        "--cert-out",
        str(certs / "foreign.pem"),
    )
    files = make_ct_series(tmp / "ct", 2).files
    gw.start()
    wait_listening(tls_port)
    try:
        yield Site(gw, tls_port, certs, files, idp_key, other_idp_key)
    finally:
        if gw.proc is not None:
            gw.stop()


def _refusals(gw: GatewayProcess) -> list[tuple[int, dict[str, str]]]:
    db = Database(f"sqlite:///{gw.home / 'index.sqlite3'}")
    try:
        with db.read() as conn:
            rows = conn.execute(
                select(audit_events.c.seq, audit_events.c.detail, audit_events.c.actor)
                .where(audit_events.c.kind == "association.refused")
                .order_by(audit_events.c.seq)
            ).all()
    finally:
        db.close()
    return [(r.seq, {**json.loads(r.detail), "actor": r.actor}) for r in rows]


def refusal_seq(gw: GatewayProcess) -> int:
    """Sequence number of the latest refusal so far (0 if none)."""
    found = _refusals(gw)
    return found[-1][0] if found else 0


def last_refusal(gw: GatewayProcess, after: int = 0, timeout: float = 30) -> dict[str, str]:
    """The latest refusal newer than ``after``, waiting for it: a TLS handshake refusal is
    audited by the gateway's connection thread while the modality has already exited."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for seq, d in _refusals(gw) if seq > after]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError("no refusal audited")
        time.sleep(0.1)


def count_instances(gw: GatewayProcess) -> int:
    db = Database(f"sqlite:///{gw.home / 'index.sqlite3'}")
    try:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(instances)).scalar_one())
    finally:
        db.close()


def test_files_written_owner_only_and_never_overwritten(site: Site) -> None:
    for name in ("ct01.pem", "ct01.key"):
        assert (site.certs / name).stat().st_mode & 0o777 == 0o600
    again = site.gw.cli(
        "device",
        "add",
        "--posture-policy",
        "none",
        "--ae",
        "CT09",
        "--ip",
        "127.0.0.1",
        "--cert-out",
        str(site.certs / "ct01.pem"),
        check=False,
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    listing = site.gw.cli("device", "list").stdout
    assert "CT09" not in listing  # nothing registered when the files cannot be written


def test_enrolled_device_pushes_over_tls13_and_tls12(site: Site) -> None:
    out = site.push("CT01", "-d", *site.tls("ct01"))
    assert "rc=0" in out and successes(out) == 2, out
    assert "Protocol    : TLSv1.3" in out, out
    # DCMTK's Extended BCP 195 profile negotiates TLS 1.2 only, with the profile's suites.
    out = site.push("CT01", "-d", "+pz", *site.tls("ct01"))
    assert "rc=0" in out and successes(out) == 2, out
    assert "Protocol    : TLSv1.2" in out and "ECDHE-RSA-AES256-GCM-SHA384" in out, out
    assert count_instances(site.gw) == 2
    out = site.push("PLAIN01", tls=False)
    assert "rc=0" in out, out


@pytest.mark.parametrize("suite", ["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"])
def test_dhe_suites_are_negotiable(site: Site, suite: str) -> None:
    """BCP 195 lists DHE-RSA beside ECDHE-RSA for TLS 1.2; without DH parameters OpenSSL never
    picks them. A client offering only DHE gets the RFC 7919 2048-bit group."""
    done = subprocess.run(
        [
            *("openssl", "s_client", "-connect", f"127.0.0.1:{site.tls_port}", "-tls1_2"),
            *("-cipher", suite, "-CAfile", str(site.ca)),
            *("-cert", str(site.certs / "ct01.pem"), "-key", str(site.certs / "ct01.key")),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert f"Cipher is {suite}" in out, out
    assert "Server Temp Key: DH, 2048 bits" in out, out
    assert "Verify return code: 0 (ok)" in out, out
    # DCMTK as the modality: its null profile plus one added suite offers DHE alone.
    out = site.push("CT01", "-d", "+pn", "+cs", "TLS_" + _iana(suite), *site.tls("ct01"))
    assert "rc=0" in out and successes(out) == 2, out
    assert f"Ciphersuite : {suite}" in out, out


def _iana(openssl_name: str) -> str:
    """DCMTK names suites the IANA way: DHE-RSA-AES128-GCM-SHA256 is
    TLS_DHE_RSA_WITH_AES_128_GCM_SHA256."""
    kex, auth, cipher, mode, mac = openssl_name.split("-")
    return f"{kex}_{auth}_WITH_{cipher[:3]}_{cipher[3:]}_{mode}_{mac}"


@pytest.mark.parametrize(
    ("case", "calling", "options", "tls", "modality_sees", "check", "reason"),
    [
        (
            "no client certificate",
            "CT01",
            ["+tla"],
            True,
            None,
            "tls-client-certificate",
            "no client certificate",
        ),
        (
            "certificate from another CA",
            "CT01",
            ["foreign"],
            True,
            None,
            "tls-client-certificate",
            "not issued by this gateway's CA",
        ),
        (
            "another device's certificate",
            "CT01",
            ["mr01"],
            True,
            "Calling AE Title Not Recognized",
            "tls-certificate",
            "is device 'MR01'",
        ),
        (
            "TLS required, plain TCP",
            "CT01",
            [],
            False,
            "Reason: No Reason",
            "tls-required",
            "must use DICOM TLS",
        ),
        (
            "user identity missing",
            "MR01",
            ["mr01"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "no user identity sent",
        ),
        (
            "wrong passcode",
            "MR01",
            ["mr01", "--user", "MR01", "--password", "guess-1234"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "wrong passcode",
        ),
        (
            "JWT where a passcode is required",
            "MR01",
            ["mr01", "jwt:valid"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "requires username+passcode",
        ),
        (
            "JWT signed by another key",
            "US01",
            ["us01", "jwt:other-key"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "does not verify",
        ),
        (
            "expired JWT",
            "US01",
            ["us01", "jwt:expired"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "expired",
        ),
        # scu_jwt.py: these three escaped admission as exceptions ("admission-error", a
        # transient rejection the modality retries for ever, a traceback each time).
        (
            "JWT signature 1 mod 4 long",
            "US01",
            ["us01", "jwt:signature+AAA"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "not base64url",
        ),
        (
            "JWT nested 1500 deep",
            "US01",
            ["us01", "jwt:deep"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "nested more than 32 deep",
        ),
        (
            "JWT that never expires (exp NaN)",
            "US01",
            ["us01", "jwt:nan"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "NaN",
        ),
        (
            "another device's JWT",  # same issuer, same audience: only the subject differs
            "US01",
            ["us01", "jwt:sub-MR01"],
            True,
            "Service Provider (ACSE Related)",
            "user-identity",
            "subject 'MR01'",
        ),
        (
            "right passcode over plain TCP",
            "MR02",
            ["--user", "MR02", "--password", MR_PASSCODE],
            False,
            "Service Provider (ACSE Related)",
            "user-identity",
            "only over DICOM TLS",
        ),
    ],
)
def test_each_failed_check_is_refused_with_its_reason(
    site: Site,
    case: str,
    calling: str,
    options: list[str],
    tls: bool,
    modality_sees: str | None,
    check: str,
    reason: str,
) -> None:
    args: list[str] = []
    for option in options:
        if option in ("foreign", "mr01", "us01", "ct01"):
            args += site.tls(option)
        elif option == "+tla":
            args += ["+tla", "+cf", str(site.ca)]
        elif option.startswith("jwt:"):
            args += ["--jwt", str(_token(site, option[4:]))]
        else:
            args.append(option)
    before = refusal_seq(site.gw)
    out = site.push(calling, *args, tls=tls)
    assert "rc=0" not in out, (case, out)
    assert "Received Store Response" not in out, (case, out)
    if modality_sees is not None:
        assert "Association Rejected" in out and modality_sees in out, (case, out)
        assert "Rejected Permanent" in out, (case, out)
    refusal = last_refusal(site.gw, before)
    assert refusal["check"] == check and reason in refusal["reason"], (case, refusal)
    assert f"refused ({check})" in site.gw.log(), case
    assert "admission-error" not in site.gw.log(), case


def _token(site: Site, kind: str) -> Path:
    """A token file for storescu --jwt: valid, or broken the way ``kind`` says."""
    key = site.other_idp_key if kind == "other-key" else site.idp_key
    if kind == "expired":
        return site.jwt(kind, key, exp=int(time.time()) - 3600)
    if kind.startswith("sub-"):
        return site.jwt(kind, key, sub=kind[4:])
    path = site.jwt(kind, key)
    now = int(time.time())
    if kind == "signature+AAA":
        path.write_text(path.read_text() + "AAA")
    elif kind == "deep":
        path.write_text(sign(key, "[" * 1500 + "]" * 1500))
    elif kind == "nan":
        raw = f'{{"iss": "{ISSUER}", "aud": "ZTBRIDGE", "sub": "US01", "iat": {now}, "exp": NaN}}'
        path.write_text(sign(key, raw))
    return path


def test_tls_is_the_default_for_a_device_given_a_certificate_or_identity(site: Site) -> None:
    """A certificate no one is made to use protects nothing, and a passcode or token over
    plain TCP crosses the network in clear: --cert-out and --user-identity imply
    --require-tls; --allow-plain keeps plain TCP open to a device with a certificate only."""

    def add(ae: str, *options: str, check: bool = True) -> str:
        done = site.gw.cli(
            "device", "add", "--posture-policy", "none", "--ae", ae, "--ip", "127.0.0.1",
            *options, check=check,
        )  # fmt: skip
        return done.stdout + done.stderr

    add("DEF01", "--cert-out", str(site.certs / "def01.pem"))
    before = refusal_seq(site.gw)
    out = site.push("DEF01", tls=False)
    assert "Association Rejected" in out, out
    assert last_refusal(site.gw, before)["check"] == "tls-required"
    assert "rc=0" in site.push("DEF01", *site.tls("def01"))
    add("DEF02", "--cert-out", str(site.certs / "def02.pem"), "--allow-plain")
    assert "rc=0" in site.push("DEF02", tls=False)
    refused = add("DEF03", "--user-identity", "passcode", "--allow-plain", check=False)
    assert "--allow-plain cannot go with --user-identity" in " ".join(refused.split())
    assert "DEF03" not in site.gw.cli("device", "list").stdout
    listing = site.gw.cli("device", "list").stdout
    assert "DEF01" in listing and "DEF02" in listing


def test_passcode_accepted_with_positive_response(site: Site) -> None:
    out = site.push(
        "MR01", "-d", "-rsp", *site.tls("mr01"), "--user", "MR01", "--password", MR_PASSCODE
    )
    assert "rc=0" in out and successes(out) == 2, out
    accepted = out.split("BEGIN A-ASSOCIATE-AC", 1)[1]
    assert "User Identity Negotiation Response:" in accepted, out
    assert "Server Response (not dumped) length: 0" in accepted, out


def test_jwt_accepted_from_storescu(site: Site) -> None:
    token = site.jwt("valid-us01", site.idp_key)
    out = site.push("US01", "-d", "-rsp", *site.tls("us01"), "--jwt", str(token))
    assert "rc=0" in out and successes(out) == 2, out
    assert "Server Response (not dumped) length: 0" in out.split("BEGIN A-ASSOCIATE-AC", 1)[1]


def test_certificate_rotation_revokes_the_old_one(site: Site) -> None:
    certs = site.certs
    site.gw.cli(
        "device",
        "add",
        "--posture-policy",
        "none",
        "--ae",
        "CR01",
        "--ip",
        "127.0.0.1",
        "--require-tls",
        "--cert-out",
        str(certs / "cr01-a.pem"),
    )
    assert "rc=0" in site.push("CR01", *site.tls("cr01-a"))
    rotated = site.gw.cli("device", "cert", "CR01", "--out", str(certs / "cr01-b.pem"))
    assert "1 earlier certificate(s) revoked" in rotated.stdout
    before = refusal_seq(site.gw)
    out = site.push("CR01", *site.tls("cr01-a"))
    assert "Calling AE Title Not Recognized" in out, out
    assert "revoked" in last_refusal(site.gw, before)["reason"]
    assert "rc=0" in site.push("CR01", *site.tls("cr01-b"))
    site.gw.cli("device", "revoke-certs", "CR01")
    assert "Calling AE Title Not Recognized" in site.push("CR01", *site.tls("cr01-b"))


def test_a_failed_rotation_leaves_the_old_certificate_working(site: Site) -> None:
    """``device cert`` used to revoke the old certificate and record the new one before
    writing the new key: when the write failed the modality was locked out, holding a revoked
    certificate and no new key. Files come first now; a failed record removes them."""
    certs = site.certs
    site.gw.cli(
        "device", "add", "--posture-policy", "none", "--ae", "ROT01", "--ip", "127.0.0.1",
        "--cert-out", str(certs / "rot01-a.pem"),
    )  # fmt: skip
    assert "rc=0" in site.push("ROT01", *site.tls("rot01-a"))
    # 1. The files cannot be written (/proc takes no new files, not even from root).
    failed = site.gw.cli(
        "device", "cert", "ROT01", "--out", "/proc/ztbridge-rot01.pem", check=False
    )
    assert failed.returncode != 0 and "cannot write" in " ".join(failed.stderr.split())
    assert "rc=0" in site.push("ROT01", *site.tls("rot01-a")), "locked out by a failed write"
    # 2. A dangling symlink where the key would go: refused before anything is done.
    (certs / "rot01-b.key").symlink_to(certs / "nowhere")
    failed = site.gw.cli(
        "device", "cert", "ROT01", "--out", str(certs / "rot01-b.pem"), check=False
    )
    assert failed.returncode != 0 and "already exists" in " ".join(failed.stderr.split())
    assert not (certs / "rot01-b.pem").exists()
    assert "rc=0" in site.push("ROT01", *site.tls("rot01-a"))
    # 3. The index refuses the record: the new files are removed again, the old one works.
    index = sqlite3.connect(site.gw.home / "index.sqlite3")
    trigger = (
        "CREATE TRIGGER fail_cert BEFORE INSERT ON device_certificates"
        " BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
    )
    with index:
        index.execute(trigger)
    try:
        failed = site.gw.cli(
            "device", "cert", "ROT01", "--out", str(certs / "rot01-c.pem"), check=False
        )
    finally:
        with index:
            index.execute("DROP TRIGGER fail_cert")
        index.close()
    assert failed.returncode != 0, failed.stdout
    assert not (certs / "rot01-c.pem").exists() and not (certs / "rot01-c.key").exists()
    assert "rc=0" in site.push("ROT01", *site.tls("rot01-a"))
    # And a rotation that works still revokes the old certificate.
    site.gw.cli("device", "cert", "ROT01", "--out", str(certs / "rot01-d.pem"))
    assert "Calling AE Title Not Recognized" in site.push("ROT01", *site.tls("rot01-a"))
    assert "rc=0" in site.push("ROT01", *site.tls("rot01-d"))


def test_plain_tcp_can_be_switched_off(tmp_path: Path) -> None:
    tls_port = free_port()
    gw = make_gateway(
        tmp_path,
        ZTBRIDGE_TLS__PORT=str(tls_port),
        ZTBRIDGE_CA_PASSPHRASE=CA_PASSPHRASE,
        ZTBRIDGE_DICOM__PLAIN_TCP="false",
    )
    plain_port = gw.port
    gw.cli("ca", "init", "--host", "127.0.0.1")
    gw.cli(
        "device",
        "add",
        "--posture-policy",
        "none",
        "--ae",
        "CT01",
        "--ip",
        "127.0.0.1",
        "--cert-out",
        str(tmp_path / "ct01.pem"),
    )
    gw.port = tls_port  # what start() waits for
    gw.start()
    try:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", plain_port), timeout=2).close()
        files = make_ct_series(tmp_path / "ct", 1).files
        done = dcmtk(
            "storescu",
            "-aet",
            "CT01",
            "-aec",
            "ZTBRIDGE",
            "+tls",
            str(tmp_path / "ct01.key"),
            str(tmp_path / "ct01.pem"),
            "+cf",
            str(gw.home / "tls" / "ca.pem"),
            "127.0.0.1",
            str(tls_port),
            str(files[0]),
        )
        assert done.returncode == 0, done.stderr
        assert f"DICOM TLS on port {tls_port}" in gw.log()
        assert f"DICOM on port {plain_port}" not in gw.log()
    finally:
        gw.stop()
