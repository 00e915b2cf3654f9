"""The hostile-input family (tests/hostile): every module drives a real ``ztbridge up`` with
DCMTK as the honest modality and raw sockets as the attacker; see harness.py.

Modules share one gateway each (a module-scoped fixture around ``harness.hostile_gateway``),
so the family stays quick; every test here is an integration test.
"""

from __future__ import annotations

import shutil

import pytest

from tests.support.node import missing_peer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/hostile/" in item.nodeid:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def dcmtk_installed() -> None:
    """DCMTK is the honest modality of every case (echo and store after each)."""
    for tool in ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            missing_peer(f"{tool} not installed: install Debian's dcmtk")
