"""The hostile-input family (tests/hostile): every module drives a real ``ztbridge up`` with
DCMTK as the honest modality and raw sockets as the attacker; see harness.py.

The DICOM modules share one gateway (``family``, package scope, with DICOM TLS): starting
one costs a CA, three device registrations and ``up``, and every case proves the gateway
still serves afterwards anyway. Each module's cases keep to their own studies. The portal's
slowloris needs a portal configured for it and starts its own. Every test here is an
integration test.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.hostile.harness import HostileGateway, hostile_gateway
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


@pytest.fixture(scope="package")
def family(
    tmp_path_factory: pytest.TempPathFactory, dcmtk_installed: None
) -> Iterator[HostileGateway]:
    """The family's running gateway: MODALITY, HOSTILE and (over DICOM TLS) HOSTILETLS; the
    ARTIM timer (acse_timeout) at its default of 30 s, which test_dul's promptness relies on."""
    tmp = tmp_path_factory.mktemp("hostile")
    with hostile_gateway(tmp, tls=True, ZTBRIDGE_DICOM__ACSE_TIMEOUT="30") as g:
        yield g
