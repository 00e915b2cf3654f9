"""kill -9 in the middle of a push loses no instance the modality saw acknowledged."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gateway.dataset import split_part10
from tests.support.capture_scp import capture_scp
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, make_gateway

pytestmark = pytest.mark.integration

_SENDING = re.compile(r"I: Sending file: (\S+)")
_RESPONSE = re.compile(r"I: Received Store Response \((\w+)")
KILL_AFTER = 40


def acknowledged(storescu_output: str) -> list[Path]:
    """The files storescu reported a success response for, in order."""
    done, current = [], None
    for line in storescu_output.splitlines():
        if m := _SENDING.search(line):
            current = Path(m.group(1))
        elif (m := _RESPONSE.search(line)) and current is not None:
            if m.group(1) == "Success":
                done.append(current)
            current = None
    return done


@pytest.mark.parametrize(
    ("index", "runway_mb"),
    [("sqlite", "0"), ("postgresql", "0"), ("sqlite", "64")],
    ids=["sqlite", "postgresql", "sqlite-runway-64mb"],
)
def test_kill9_mid_push_loses_nothing_acknowledged(
    tmp_path: Path, dcmtk: None, index: str, runway_mb: str, request: pytest.FixtureRequest
) -> None:
    """On the embedded SQLite index and on an external PostgreSQL server alike, and with the
    pack store's optional zero runway (records written into pre-zeroed space)."""
    series = make_ct_series(tmp_path / "ct", 200)
    env = {"ZTBRIDGE_STORE__RUNWAY_MB": runway_mb}
    if index == "postgresql":
        env["ZTBRIDGE_INDEX__URL"] = request.getfixturevalue("postgres_url")
    gw: GatewayProcess = make_gateway(tmp_path, **env)
    gw.cli("device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--posture-policy", "none")
    gw.start()
    push = subprocess.Popen(
        [
            "storescu",
            "-v",
            "-aet",
            "STORESCU",
            "-aec",
            "ZTBRIDGE",
            "127.0.0.1",
            str(gw.port),
            *[str(f) for f in series.files],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Read storescu's log as it happens and kill the gateway right after the 40th success
    # response: the crash falls mid-push whatever the machine's speed.
    assert push.stdout is not None
    lines: list[str] = []
    successes = 0
    for line in push.stdout:
        lines.append(line)
        if (m := _RESPONSE.search(line)) and m.group(1) == "Success":
            successes += 1
            if successes == KILL_AFTER:
                gw.kill9()
                break
    rest, _ = push.communicate(timeout=120)
    acked = acknowledged("".join(lines) + rest)
    assert KILL_AFTER <= len(acked) < 200, f"crash did not fall mid-push ({len(acked)} acked)"

    gw.start()  # recovery on restart
    try:
        out = tmp_path / "export"
        gw.cli("export", "--study", series.study_uid, "--out", str(out))
        exported = {}
        for path in out.rglob("*.dcm"):
            part = split_part10(path.read_bytes())
            exported[part.sop_instance] = part.dataset
        for f in acked:
            part = split_part10(f.read_bytes())
            assert exported.get(part.sop_instance) == part.dataset, f"lost {f.name}"
        assert "store verified" in gw.cli("store", "verify").stdout
        assert "audit chain intact" in gw.cli("audit", "verify").stdout
        # The modality retries what was not acknowledged; everything lands, no duplicates.
        retry = subprocess.run(
            [
                "storescu",
                "-aet",
                "STORESCU",
                "-aec",
                "ZTBRIDGE",
                "127.0.0.1",
                str(gw.port),
                *[str(f) for f in series.files],
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert retry.returncode == 0, retry.stderr
    finally:
        gw.stop()
    status = gw.cli("status").stdout
    assert re.search(r"instances\s+200\b", status), status
    assert (gw.home / "index.sqlite3").exists() == (index == "sqlite"), "wrong index in use"


def test_capture_scp_sanity(tmp_path: Path, dcmtk: None) -> None:
    """The recorder the round-trip tests compare against does receive what is sent."""
    series = make_ct_series(tmp_path / "ct", 2)
    with capture_scp() as wire:
        subprocess.run(
            [
                "storescu",
                "-aec",
                "ZTBRIDGE",
                "127.0.0.1",
                str(wire.port),
                *[str(f) for f in series.files],
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    assert len(wire.received) == 2
