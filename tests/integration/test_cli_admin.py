"""What a hospital admin meets at the command line, run as real ``ztbridge`` processes.

README's TLS examples work as written; a world-open address range and a certificate that
still allows plain TCP are said loudly; ``status`` tells whether ``up`` runs and where.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.gateway_proc import (
    ZTBRIDGE,
    GatewayProcess,
    free_port,
    make_gateway,
    running,
)

ROOT = Path(__file__).resolve().parents[2]
CA_PASSPHRASE = "admin-test-ca-passphrase"


def flat(text: str) -> str:
    return " ".join(text.split())


def readme_commands(prefix: str) -> list[str]:
    """The README's shell lines starting with ``prefix``, continuation lines joined and
    trailing comments dropped."""
    commands, current = [], ""
    for raw in (ROOT / "README.md").read_text().splitlines():
        line = raw.strip()
        if not current and not line.startswith(prefix):
            continue
        line = re.sub(r"\s+#.*$", "", line)
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        commands.append(current + line)
        current = ""
    return commands


def with_ca(tmp_path: Path) -> GatewayProcess:
    gw = make_gateway(tmp_path, ZTBRIDGE_CA_PASSPHRASE=CA_PASSPHRASE)
    gw.cli("ca", "init", "--host", "localhost")
    return gw


def test_readme_tls_examples_work_as_written(tmp_path: Path) -> None:
    gw = with_ca(tmp_path)
    work = tmp_path / "admin"
    work.mkdir()
    (work / "mr3t.pass").write_text("a long enough passcode\n")
    key = Ed25519PrivateKey.generate().public_key()
    (work / "idp-public.pem").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    commands = [c for c in readme_commands("ztbridge device add") if "--cert-out" in c]
    assert len(commands) >= 3, commands
    for command in commands:
        argv = [ZTBRIDGE, *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=work, env=gw.env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert (work / "ct01.pem").is_file() and (work / "ct01.key").is_file()


def test_any_address_is_refused_unless_asked_for(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    for everything in ("0.0.0.0/0", "::/0"):
        done = gw.cli(
            "device", "add", "--ae", "OPEN", "--ip", everything, "--posture-policy", "none",
            check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stdout + done.stderr
        assert "admits every address" in flat(done.stderr)
        assert "--allow-any-address" in flat(done.stderr)
    assert "OPEN" not in gw.cli("device", "list").stdout
    done = gw.cli(
        "device", "add", "--ae", "OPEN", "--ip", "0.0.0.0/0", "--posture-policy", "none",
        "--allow-any-address",
    )  # fmt: skip
    assert "ANY address" in flat(done.stderr)


def test_a_certificate_that_leaves_plain_tcp_open_is_said_loudly(tmp_path: Path) -> None:
    gw = with_ca(tmp_path)
    out = tmp_path / "certs"
    out.mkdir()
    added = gw.cli(
        "device", "add", "--ae", "CT01", "--ip", "127.0.0.1", "--posture-policy", "none",
        "--cert-out", str(out / "a.pem"), "--allow-plain",
    )  # fmt: skip
    assert "PLAIN TCP" in flat(added.stderr)
    assert "ztbridge device tls CT01 --require-tls" in flat(added.stderr)
    cert = gw.cli("device", "cert", "CT01", "--out", str(out / "b.pem"))
    assert "PLAIN TCP" in flat(cert.stderr)
    gw.cli("device", "tls", "CT01", "--require-tls")
    cert = gw.cli("device", "cert", "CT01", "--out", str(out / "c.pem"))
    assert "PLAIN TCP" not in flat(cert.stderr)
    opened = gw.cli("device", "tls", "CT01", "--allow-plain")
    assert "PLAIN TCP" in flat(opened.stderr)


def test_status_says_whether_up_runs_and_where_it_listens(tmp_path: Path) -> None:
    gw = with_ca(tmp_path)
    gw.cli("device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--posture-policy", "none")
    before = flat(gw.cli("status").stdout)
    assert "ztbridge up not running" in before
    assert f"DICOM TLS ZTBRIDGE on 127.0.0.1:{gw.env['ZTBRIDGE_TLS__PORT']}" in before
    with running(gw):
        during = flat(gw.cli("status").stdout)
        assert gw.proc is not None
        assert f"running, pid {gw.proc.pid}" in during, during
        assert f"DICOM TLS on port {gw.env['ZTBRIDGE_TLS__PORT']}" in during
        assert f"DICOM on port {gw.port}" in during
    after = flat(gw.cli("status").stdout)
    assert "ztbridge up not running" in after


def test_agent_lines_carry_a_timestamp(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    key = tmp_path / "ct01.posture.key"
    gw.cli("device", "add", "--ae", "CT01", "--ip", "127.0.0.1", "--posture-key-out", str(key))
    done = gw.cli(
        "agent", "--gateway", f"https://127.0.0.1:{free_port()}", "--device", "CT01",
        "--key", str(key), "--once",
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(x for x in done.stderr.splitlines() if "report not delivered" in x)
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d report not delivered", line), line
