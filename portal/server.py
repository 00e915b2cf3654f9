"""Serving the portal app: uvicorn on its own thread, HTTPS unless explicitly told otherwise.

uvicorn is given the socket as plain TCP and ``portal.edge.Gate`` as its protocol: the guard
admits each connection (caps per address and in all), runs the TLS handshake under its
deadline and hands the stream to uvicorn's h11 protocol with a deadline for request headers.

The listening socket is bound here, on the caller's thread, so "port in use" is an ordinary
OSError the CLI can explain; the TLS context is built here too, so a missing or mismatched
certificate stops ``ztbridge up`` with the setting named instead of failing in a thread.
Without a configured certificate or ``ca init``'s, ``ztbridge up`` makes a self-signed one at
first start and keeps it in the home. Plain HTTP is served only when
``portal.allow_plain_http`` is set (refused in production) and is logged loudly: posture
reports are signed, but their content is readable on the path.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Literal

import uvicorn
from starlette.types import ASGIApp

from gateway.errors import ConfigError
from gateway.pki import portal_certificate
from gateway.service import Gateway
from gateway.settings import Settings
from portal.app import create_app
from portal.edge import ConnectionTable, EdgeLimits, gate_class, release_memory

log = logging.getLogger("ztbridge.portal")

Mode = Literal["https", "http"]


def credentials(settings: Settings) -> tuple[Path, Path] | None:
    """The portal's certificate and key: the settings', else the one ``ca init`` issued, else
    the self-signed one a first ``ztbridge up`` made; None when there is none yet."""
    s = settings.portal
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        raise ConfigError(
            "set both portal.tls_cert_file and portal.tls_key_file (or neither):"
            " ZTBRIDGE_PORTAL__TLS_CERT_FILE / ZTBRIDGE_PORTAL__TLS_KEY_FILE"
        )
    return portal_certificate(settings.home, s.tls_cert_file, s.tls_key_file)


def portal_mode(settings: Settings) -> Mode | None:
    """How the portal is served with what the home and settings hold now; None: there is no
    certificate and plain HTTP is not allowed, so ``ztbridge up`` makes a self-signed one
    (``gateway.pki.ensure_self_signed``) and serves HTTPS with it."""
    if credentials(settings) is not None:
        return "https"
    return "http" if settings.portal.allow_plain_http else None


def tls_context(settings: Settings) -> ssl.SSLContext:
    """A server context: TLS 1.2 or 1.3 only, OpenSSL's secure defaults otherwise."""
    found = credentials(settings)
    assert found is not None
    cert_file, key_file = found
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as e:
        raise ConfigError(
            f"portal.tls_cert_file / tls_key_file: {e.filename} does not exist"
        ) from e
    except ssl.SSLError as e:  # before OSError, of which it is a subclass
        raise ConfigError(
            f"portal certificate {cert_file} and key {key_file}"
            f" are not a PEM certificate and its key: {e.reason or e}"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"portal.tls_cert_file / tls_key_file: cannot read {e.filename}: {e.strerror}"
        ) from e
    return ctx


HOUSEKEEPING_SECONDS = 10.0
RELEASE_AFTER_CLOSED = 64  # connections closed since the last peak before memory is trimmed


class _UvicornInvalidRequest(logging.Filter):
    """uvicorn warns once per malformed request; the guard counts them and summarises."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


_QUIET = _UvicornInvalidRequest()


def edge_limits(settings: Settings, ctx: ssl.SSLContext | None) -> EdgeLimits:
    """The guard's limits from ``portal.*``."""
    s = settings.portal
    return EdgeLimits(
        max_connections=s.max_connections,
        max_per_address=s.max_connections_per_address,
        handshake_timeout=s.tls_handshake_timeout,
        header_timeout=s.header_timeout,
        max_header_bytes=s.max_header_bytes,
        hsts_max_age=s.hsts_max_age_seconds,
        tls=ctx,
        max_body_bytes=s.max_body_mb << 20,
        body_window=s.body_window_seconds,
        body_min_bytes=s.body_min_kib << 10,
    )


class PortalServer:
    """The portal app under uvicorn, on a background thread."""

    def __init__(self, gateway: Gateway, mode: Mode, app: ASGIApp | None = None) -> None:
        self.gateway = gateway
        self.mode = mode
        self.app = app  # None: ``create_app(gateway)`` (tests pass one with routes of theirs)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._housekeeping: threading.Thread | None = None
        self._stopping = threading.Event()
        self.connections: ConnectionTable | None = None

    @property
    def url(self) -> str:
        """Where the portal listens."""
        s = self.gateway.settings.portal
        return f"{self.mode}://{s.host}:{s.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Bind, then serve on a thread; returns once uvicorn accepts connections.

        Raises OSError if the port cannot be bound, ConfigError for a bad certificate.
        """
        s = self.gateway.settings.portal
        ctx = tls_context(self.gateway.settings) if self.mode == "https" else None
        family = socket.AF_INET6 if ":" in s.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.host, s.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        table = ConnectionTable(s.max_connections, s.max_connections_per_address)
        config = uvicorn.Config(
            self.app if self.app is not None else create_app(self.gateway),
            http=gate_class(table, edge_limits(self.gateway.settings, ctx)),
            ws="none",  # the portal has no WebSocket route: no upgrade path to guard
            timeout_keep_alive=s.keep_alive_timeout,
            h11_max_incomplete_event_size=s.max_header_bytes,
            log_config=None,  # keep ztbridge's logging as configured
            access_log=False,  # each report is logged by the posture service itself
            server_header=False,
            lifespan="off",
        )
        logging.getLogger("uvicorn.error").addFilter(_QUIET)
        self.connections = table
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="portal", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ConfigError("the portal did not start (see the log above)")
            time.sleep(0.02)
        if self.mode == "http":
            log.warning(
                "PORTAL SERVES PLAIN HTTP on %s:%d (portal.allow_plain_http): posture reports"
                " cross the network readable by anyone on the path; development only",
                s.host,
                s.port,
            )
        log.info("portal on %s", self.url)
        self._stopping.clear()
        self._housekeeping = threading.Thread(
            target=self._summarise, name="portal-housekeeping", daemon=True
        )
        self._housekeeping.start()

    def _summarise(self) -> None:
        """Refused posture posts are only counted as they come (gateway/posture/refusals.py);
        their once-a-minute summary is written here too, so a flood that stops is reported.
        So are the connection guard's refusals and deadlines, and after a burst of
        connections has closed the memory they held is handed back (``release_memory``)."""
        while not self._stopping.wait(HOUSEKEEPING_SECONDS):
            try:
                self.gateway.posture.flush_refusals()
            except Exception:
                log.exception("could not summarise refused posture reports")
            self._summarise_connections()

    def _summarise_connections(self) -> None:
        table = self.connections
        if table is None:
            return
        events = table.take_events()
        if events:
            log.warning(
                "portal connections in the last %.0f s: %s (open now: %d)",
                HOUSEKEEPING_SECONDS,
                ", ".join(f"{what} x{n}" for what, n in sorted(events.items())),
                table.total,
            )
        if table.peak - table.total >= RELEASE_AFTER_CLOSED:
            table.peak = table.total
            release_memory()

    def stop(self) -> None:
        """Ask uvicorn to finish open requests and exit; wait for its thread."""
        self._stopping.set()
        if self._housekeeping is not None:
            self._housekeeping.join(timeout=15)
            self._housekeeping = None
        self.gateway.posture.flush_refusals(final=True)
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._socket is not None:
            self._socket.close()
        self._summarise_connections()
        self._server = self._thread = self._socket = None
