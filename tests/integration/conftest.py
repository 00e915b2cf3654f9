"""Integration fixtures: a ztbridge process on a free port, DCMTK as the modality."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_proc import GatewayProcess, make_gateway, running
from tests.support.node import missing_peer


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        missing_peer(f"{tool} not installed: install Debian's dcmtk")


@pytest.fixture
def dcmtk() -> None:
    """DCMTK's storescu/echoscu must be on PATH."""
    for tool in ("storescu", "echoscu"):
        _require(tool)


@pytest.fixture
def gateway(tmp_path: Path, dcmtk: None) -> Iterator[GatewayProcess]:
    """A running ztbridge with the device STORESCU registered for 127.0.0.1.

    storescu stands in for a modality that runs no posture agent, so it is registered with
    posture policy 'none'; posture itself is exercised in test_posture.py.
    """
    gw = make_gateway(tmp_path)
    gw.cli(
        "device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--name", "test modality",
        "--posture-policy", "none",
    )  # fmt: skip
    with running(gw):
        yield gw
