"""``ztbridge``: the gateway's CLI plus ``up``, which starts the network edges."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from dicom_scp.server import DicomServer
from gateway.cli import announce_passphrase, app, err, fail, settings, setup_logging
from gateway.errors import ZtbridgeError
from gateway.service import open_gateway

log = logging.getLogger("ztbridge")


@app.command()
def up() -> None:
    """Start ztbridge: the DICOM listener on embedded defaults. Ctrl-C stops it cleanly."""
    try:
        s = settings()
        setup_logging(s.log_level)
        gw = open_gateway(s)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    announce_passphrase(gw)
    server = DicomServer(gw)
    try:
        server.start()
    except OSError as e:
        gw.close()
        raise fail(
            f"cannot listen on {s.dicom.host}:{s.dicom.port}: {e.strerror}"
            " (set ZTBRIDGE_DICOM__PORT or stop what uses the port)"
        ) from None
    if not gw.devices.list():
        err.print(
            "No device is registered yet, so every association will be refused. Register one:\n"
            "    ztbridge device add --ae CT01 --ip 10.0.0.0/24 --name 'CT room 1'",
            highlight=False,
        )
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log.info(
        "ztbridge ready: DICOM %s on port %d, data in %s",
        s.dicom.ae_title,
        s.dicom.port,
        s.home.resolve(),
    )
    try:
        while not stop.wait(60):
            gw.keys.forget_idle()
    finally:
        server.stop()
        gw.close()
        log.info("ztbridge stopped")
    raise typer.Exit(0)


def main() -> None:
    """Console entry point."""
    app()
