"""The status services a page can call without the CLI: figures, devices, whether up runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import enrollment, pki
from gateway.errors import InvalidInputError
from gateway.service import Gateway, open_gateway
from gateway.settings import load_settings
from gateway.status import UpMarker, device_views, gather

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    g = open_gateway(
        load_settings(home=tmp_path / "home", custodian_passphrase="p", ledger={"enabled": False})
    )
    yield g
    g.close()


def test_gather_on_a_fresh_home(gw: Gateway) -> None:
    found = gather(gw)
    assert (found.devices, found.studies, found.instances, found.audit_events) == (0, 0, 0, 0)
    assert found.up is None
    assert "no CA yet" in found.dicom_tls
    assert dict(found.rows())["ztbridge up"].startswith("not running")


def test_up_marker_seen_from_another_process(gw: Gateway) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from gateway.status import UpMarker;"
            f"m = UpMarker(pathlib.Path({str(gw.settings.home)!r}));"
            "assert m.acquire(['DICOM on port 11112']); print('held', flush=True);"
            "sys.stdin.read(); m.release()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        running = UpMarker(gw.settings.home).running()
        assert running == {
            "pid": holder.pid,
            "listening": ["DICOM on port 11112"],
            "started_at": running["started_at"] if running else None,
        }
        assert not UpMarker(gw.settings.home).acquire([], attempts=2)  # a second up: refused
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert UpMarker(gw.settings.home).running() is None  # released: not running


def test_add_device_service_and_views(gw: Gateway) -> None:
    new = enrollment.NewDevice("CT01", ["10.0.0.5"], "CT room 1", posture_policy="none")
    added = enrollment.add_device(gw, new, "test", None)
    assert added.device.ae_title == "CT01" and added.require_tls is False
    (view,) = device_views(gw)
    assert (view.ae_title, view.networks, view.posture_policy) == ("CT01", ("10.0.0.5/32",), "none")
    with pytest.raises(InvalidInputError, match="every address"):
        enrollment.add_device(
            gw, enrollment.NewDevice("ANY", ["::/0"], posture_policy="none"), "test", None
        )
    assert len(device_views(gw)) == 1


def test_add_device_undoes_the_device_when_enrollment_fails_late(
    gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compensating delete: the certificate's file name is taken by someone else after
    the device row exists; the device and its posture key file must be gone afterwards."""
    pki.init_ca(pki.PkiPaths(gw.settings.home), "ca pass", ["localhost"], gw.clock)
    key = tmp_path / "ct.posture.key"
    cert = tmp_path / "ct.pem"
    register = gw.posture.add_device

    def register_then_collide(*args: Any, **kwargs: Any) -> Any:
        done = register(*args, **kwargs)
        cert.write_text("another device's certificate")
        return done

    monkeypatch.setattr(gw.posture, "add_device", register_then_collide)
    new = enrollment.NewDevice(
        "CT02", ["10.0.0.6"], posture_key_out=key, options=enrollment.EnrollOptions(cert_out=cert)
    )
    with pytest.raises(InvalidInputError, match="already exists"):
        enrollment.add_device(gw, new, "test", "ca pass")
    assert device_views(gw) == [] and not key.exists()
    assert cert.read_text() == "another device's certificate"
    kinds = [e.kind for e in gw.audit.entries()]
    assert kinds.count("device.added") == 1 and kinds.count("device.removed") == 1
