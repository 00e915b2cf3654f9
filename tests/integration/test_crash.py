"""kill -9 in the middle of a push loses no instance the modality saw acknowledged."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from gateway.dataset import split_part10
from tests.support.capture_scp import capture_scp
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, make_gateway

pytestmark = pytest.mark.integration

_SENDING = re.compile(r"I: Sending file: (\S+)")
_RESPONSE = re.compile(r"I: Received Store Response \((\w+)")


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


def test_kill9_mid_push_loses_nothing_acknowledged(tmp_path: Path, dcmtk: None) -> None:
    series = make_ct_series(tmp_path / "ct", 200)
    gw: GatewayProcess = make_gateway(tmp_path)
    gw.cli("device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1")
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
    index = gw.home / "index.sqlite3"
    deadline = time.monotonic() + 60
    # Kill once some instances have landed, so the crash falls in the middle of the push.
    while time.monotonic() < deadline and index.stat().st_size < 200_000:
        time.sleep(0.05)
    time.sleep(0.3)
    gw.kill9()
    output, _ = push.communicate(timeout=120)
    acked = acknowledged(output)
    assert 0 < len(acked) < 200, f"crash did not fall mid-push ({len(acked)} acknowledged)"

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
