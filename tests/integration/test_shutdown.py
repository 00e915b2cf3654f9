"""SIGTERM in the middle of a push: open transfers finish, then ztbridge exits cleanly."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import make_gateway

pytestmark = pytest.mark.integration


def test_sigterm_drains_open_association(tmp_path: Path, dcmtk: None) -> None:
    series = make_ct_series(tmp_path / "ct", 150)
    gw = make_gateway(tmp_path)
    gw.cli("device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--posture-policy", "none")
    gw.start()
    push = subprocess.Popen(
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
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(0.5)
    assert push.poll() is None, "push finished before the signal; make the series larger"
    assert gw.stop() == 0
    output, _ = push.communicate(timeout=120)
    assert push.returncode == 0, output  # every instance acknowledged, none failed
    # New associations during the drain are turned away, and after exit nothing listens.
    gw.start()
    try:
        status = gw.cli("status").stdout
    finally:
        gw.stop()
    assert "150 (" in status, status
