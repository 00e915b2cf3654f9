"""``ztbridge up``: the composition root that starts the network edges around the core.

``gateway`` may not import ``dicom_scp`` or ``portal``; the command that starts them all
therefore lives here, above all three.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from gateway.errors import ZtbridgeError
from ztbridge.cli.console import err, fail, setup_logging
from ztbridge.cli.context import announce_passphrase, settings

if TYPE_CHECKING:
    from gateway.service import Gateway
    from gateway.status import UpMarker
    from portal.server import PortalServer

log = logging.getLogger("ztbridge")


def up() -> None:
    """Start ztbridge: the DICOM listener on embedded defaults. Ctrl-C stops it cleanly."""
    from gateway.service import open_gateway
    from gateway.status import UpMarker

    s = settings()
    setup_logging(s.log_level)
    marker = UpMarker(s.home)
    try:
        gw = open_gateway(s)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    if not marker.acquire([]):
        gw.close()
        raise fail(f"another 'ztbridge up' runs on {s.home} (pid {_pid(marker)}): stop it first")
    try:
        _serve(gw, s.home.resolve(), marker)
    finally:
        marker.release()


def _pid(marker: UpMarker) -> str:
    found = marker.running()
    return str(found.get("pid", "?")) if found else "?"


def _serve(gw: Gateway, home: Path, marker: UpMarker) -> None:
    from dicom_scp.server import DicomServer
    from gateway.anchoring.worker import AnchorWorker

    s = gw.settings
    announce_passphrase(gw)
    announce_first_admin(gw)
    # Handlers go in before anything listens, and only set a flag: a handler that touched a
    # lock (Event.set) could deadlock against the main thread holding that same lock.
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    portal = start_portal(gw)
    server = DicomServer(gw)
    try:
        server.start()
    except OSError as e:
        if portal is not None:
            portal.stop()
        gw.close()
        raise fail(
            f"cannot listen on {e.filename}: {e.strerror} (set ZTBRIDGE_DICOM__PORT or"
            " ZTBRIDGE_TLS__PORT, or stop what uses the port)"
        ) from None
    except ZtbridgeError as e:
        if portal is not None:
            portal.stop()
        gw.close()
        raise fail(str(e)) from None
    marker.update(list(server.listening) + ([f"portal on port {s.portal.port}"] if portal else []))
    worker = AnchorWorker(gw.anchoring) if gw.anchoring is not None else None
    if worker is not None:
        worker.start()
    if not gw.devices.list():
        err.print(
            "No device is registered yet, so every association will be refused. Register one"
            " (its host then runs 'ztbridge agent' with the posture key):\n"
            "    ztbridge device add --ae CT01 --ip 10.0.0.0/24 --name 'CT room 1'"
            " --posture-key-out CT01.posture.key\n"
            "or, for a modality that cannot run the agent (admitted on AE title and address):\n"
            "    ztbridge device add --ae CT01 --ip 10.0.0.5 --posture-policy none",
            highlight=False,
        )
    log.info(
        "ztbridge ready: AE title %s, %s, data in %s",
        s.dicom.ae_title,
        ", ".join(server.listening),
        home,
    )
    try:
        ticks = 0
        while not stopping:
            time.sleep(0.2)
            ticks += 1
            if ticks % 300 == 0:  # every minute
                gw.keys.forget_idle()
                _expire_shares(gw)
        log.info("signal %d: stopping", stopping[0])
    finally:
        server.stop()
        if worker is not None:
            worker.stop()
        if portal is not None:
            portal.stop()
        gw.close()
        log.info("ztbridge stopped")
    raise typer.Exit(0)


def _expire_shares(gw: Gateway) -> None:
    """Shares past their expiry end like a revoke (``gateway.accounts.expiry``)."""
    from gateway.accounts.expiry import sweep

    if gw.accounts is None:
        return
    try:
        done = sweep(gw.db, gw.users, gw.users.sessions, gw.anchoring, gw.clock, gw.audit)
    except ZtbridgeError as e:
        log.warning("expired shares: %s (tried again in a minute)", e)
        return
    if done.waiting:
        log.info(
            "%d expired shares wait for their patient's next login to be revoked on-chain"
            " (access already ended in the index)",
            done.waiting,
        )


def announce_first_admin(gw: Gateway) -> None:
    """On a fresh home, the first admin's one-time enrollment link (printed once); while
    that admin has not enrolled, how to get a new link."""
    try:
        invitation = gw.users.first_admin_link("ztbridge up")
        enrolled = gw.users.admin_enrolled()
    except ZtbridgeError as e:
        gw.close()
        raise fail(str(e)) from None
    if invitation is not None:
        err.print(
            "\nThe first administrator enrolls with this one-time link (shown only now;"
            f" valid until {invitation.expires_at}):\n\n    {invitation.url}\n",
            highlight=False,
        )
    elif not enrolled:
        err.print(
            "No administrator has enrolled yet. If the first enrollment link is lost, make a"
            " new one with the custodian passphrase set: ztbridge user recover admin",
            highlight=False,
        )


def start_portal(gw: Gateway) -> PortalServer | None:
    """Serve the portal (posture reports, patients and doctors) before DICOM listens, so
    that once the DICOM port accepts connections the agents can report too. HTTPS with the
    configured certificate, else ``ca init``'s server certificate, else a self-signed one
    made now and kept in the home; plain HTTP only with ``portal.allow_plain_http``. The
    certificate's SHA-256 fingerprint is printed, for users to compare with their browser's."""
    from gateway.pki import ensure_self_signed
    from portal.server import PortalServer, credentials, portal_mode

    s = gw.settings.portal
    try:
        mode = portal_mode(gw.settings)
        made = False
        if mode is None:
            _, _, made = ensure_self_signed(gw.settings.home, _portal_names(s.host), gw.clock)
            mode = "https"
        portal = PortalServer(gw, mode)
        portal.start()
        if mode == "https":
            found = credentials(gw.settings)
            assert found is not None
            _announce_certificate(found[0], made, portal.url)
    except ZtbridgeError as e:
        gw.close()
        raise fail(str(e)) from None
    except OSError as e:
        gw.close()
        raise fail(
            f"cannot listen on {s.host}:{s.port} for the portal: {e.strerror}"
            " (set ZTBRIDGE_PORTAL__PORT or stop what uses the port)"
        ) from None
    return portal


def _portal_names(host: str) -> list[str]:
    """The self-signed certificate's names: this host's, and the portal's address if it
    listens on one address only."""
    from gateway.pki import default_server_names

    names = default_server_names()
    if host not in ("0.0.0.0", "::") and host not in names:
        names.append(host)
    return names


def _announce_certificate(cert: Path, made: bool, url: str) -> None:
    from gateway.pki import certificate_fingerprint

    fp = certificate_fingerprint(cert)
    how = "self-signed, made now" if made else str(cert)
    log.info("portal certificate %s, SHA-256 fingerprint %s", cert, fp)
    err.print(
        f"\nThe portal is at {url}; its certificate ({how}) has the SHA-256 fingerprint\n\n"
        f"    {fp}\n\ncompare it with what the browser shows before logging in"
        " (also in 'ztbridge status').\n",
        highlight=False,
        soft_wrap=True,  # the fingerprint stays on one line, whatever the terminal's width
    )
