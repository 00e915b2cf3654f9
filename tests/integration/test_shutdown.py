"""SIGTERM in the middle of a push: open transfers finish, then ztbridge exits cleanly."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import make_gateway

pytestmark = pytest.mark.integration

SIGNAL_AFTER = 10  # acknowledged instances before SIGTERM: the push is surely under way
SUCCESS = "Received Store Response (Success)"


def test_sigterm_drains_open_association(tmp_path: Path, dcmtk: None) -> None:
    series = make_ct_series(tmp_path / "ct", 150)
    gw = make_gateway(tmp_path)
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
    # Read storescu's log as it happens (on a thread, so its pipe never fills while the
    # gateway drains) and signal after the SIGNAL_AFTER-th acknowledgement, whatever the
    # machine's speed.
    lines: list[str] = []
    under_way = threading.Event()

    def read() -> None:
        assert push.stdout is not None
        acknowledged = 0
        for line in push.stdout:
            lines.append(line)
            acknowledged += SUCCESS in line
            if acknowledged == SIGNAL_AFTER:
                under_way.set()
        under_way.set()  # storescu ended: let the main thread see how

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert under_way.wait(timeout=300), "storescu never got going"
    acknowledged_at_signal = sum(SUCCESS in line for line in lines)
    assert acknowledged_at_signal < 150, "push finished before the signal; make the series larger"
    assert gw.stop() == 0
    push.wait(timeout=300)
    reader.join(timeout=60)
    output = "".join(lines)
    assert push.returncode == 0, output[-3000:]  # every instance acknowledged, none failed
    assert output.count(SUCCESS) == 150, output[-3000:]
    # New associations during the drain are turned away, and after exit nothing listens.
    gw.start()
    try:
        status = gw.cli("status").stdout
    finally:
        gw.stop()
    assert "150 (" in status, status
