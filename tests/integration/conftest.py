"""Integration fixtures: a ztbridge process on a free port, DCMTK as the modality."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateway_proc import GatewayProcess, make_gateway, running


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        message = f"{tool} not installed: run 'make test' (installs Debian's dcmtk)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def dcmtk() -> None:
    """DCMTK's storescu/echoscu must be on PATH."""
    for tool in ("storescu", "echoscu"):
        _require(tool)


@pytest.fixture
def gateway(tmp_path: Path, dcmtk: None) -> Iterator[GatewayProcess]:
    """A running ztbridge with the device STORESCU registered for 127.0.0.1."""
    gw = make_gateway(tmp_path)
    gw.cli("device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1", "--name", "test modality")
    with running(gw):
        yield gw
