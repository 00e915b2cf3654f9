"""The event-driven association loops (dicom_scp/reactor.py) over real sockets.

They replace pynetdicom's polling loops with copies that block on events, so they must stay
in step with the pynetdicom release they were copied from, and must carry a whole
association (negotiation, DIMSE exchange, release, abort) exactly as the originals do.
"""

from __future__ import annotations

import threading
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_scp import reactor


def test_checked_against_the_installed_pynetdicom() -> None:
    """A pynetdicom upgrade must be reviewed against the copied loops before it ships."""
    assert reactor.supported(), (
        f"pynetdicom {pynetdicom.__version__} is not in reactor.CHECKED_VERSIONS: compare its"
        " DULServiceProvider.run_reactor and Association._run_reactor with dicom_scp/reactor.py"
    )


@pytest.fixture
def server() -> Any:
    """A pynetdicom acceptor whose associations run on the event-driven loops."""
    accelerated: list[Any] = []

    def on_open(event: Any) -> None:
        assert reactor.accelerate(event.assoc)
        accelerated.append(event.assoc)

    ae = AE(ae_title="REACTOR")
    ae.add_supported_context(Verification)
    srv = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), (evt.EVT_C_ECHO, lambda _e: 0x0000)],
    )
    yield srv, accelerated
    srv.shutdown()


def _client() -> AE:
    ae = AE(ae_title="CLIENT")
    ae.add_requested_context(Verification)
    return ae


def test_echo_and_release_on_the_event_loops(server: Any) -> None:
    srv, accelerated = server
    port = srv.server_address[1]
    assoc = _client().associate("127.0.0.1", port, ae_title="REACTOR")
    assert assoc.is_established
    for _ in range(20):
        assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert len(accelerated) == 1
    acceptor = accelerated[0]
    acceptor.join(timeout=30)
    assert not acceptor.is_alive(), "acceptor thread did not end after release"
    assert acceptor.is_released


def test_peer_abort_ends_the_acceptor(server: Any) -> None:
    srv, accelerated = server
    assoc = _client().associate("127.0.0.1", srv.server_address[1], ae_title="REACTOR")
    assert assoc.is_established
    assoc.abort()
    accelerated[0].join(timeout=30)
    assert not accelerated[0].is_alive()
    assert accelerated[0].is_aborted


def test_many_concurrent_associations(server: Any) -> None:
    srv, accelerated = server
    port = srv.server_address[1]
    failures: list[str] = []

    def one() -> None:
        a = _client().associate("127.0.0.1", port, ae_title="REACTOR")
        try:
            if not a.is_established or a.send_c_echo().Status != 0x0000:
                failures.append("echo failed")
        finally:
            a.release()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures
    assert len(accelerated) == 8
