"""``ztbridge``: the gateway's CLI plus ``up``, which starts the network edges."""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

import typer

import gateway.chain_cli  # noqa: F401  (registers 'chain' and 'verify')
from dicom_scp.server import DicomServer
from gateway.anchoring.worker import AnchorWorker
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
    # Handlers go in before anything listens, and only set a flag: a handler that touched a
    # lock (Event.set) could deadlock against the main thread holding that same lock.
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = DicomServer(gw)
    try:
        server.start()
    except OSError as e:
        gw.close()
        raise fail(
            f"cannot listen on {s.dicom.host}:{s.dicom.port}: {e.strerror}"
            " (set ZTBRIDGE_DICOM__PORT or stop what uses the port)"
        ) from None
    worker = AnchorWorker(gw.anchoring) if gw.anchoring is not None else None
    if worker is not None:
        worker.start()
    if not gw.devices.list():
        err.print(
            "No device is registered yet, so every association will be refused. Register one:\n"
            "    ztbridge device add --ae CT01 --ip 10.0.0.0/24 --name 'CT room 1'",
            highlight=False,
        )
    log.info(
        "ztbridge ready: DICOM %s on port %d, data in %s",
        s.dicom.ae_title,
        s.dicom.port,
        s.home.resolve(),
    )
    try:
        ticks = 0
        while not stopping:
            time.sleep(0.2)
            ticks += 1
            if ticks % 300 == 0:  # every minute
                gw.keys.forget_idle()
        log.info("signal %d: stopping", stopping[0])
    finally:
        server.stop()
        if worker is not None:
            worker.stop()
        gw.close()
        log.info("ztbridge stopped")
    raise typer.Exit(0)


def main() -> None:
    """Console entry point.

    Everything ztbridge writes (index, keys, exports) may hold patient data or key
    material: files are created readable by their owner only.
    """
    os.umask(0o077)
    app()
