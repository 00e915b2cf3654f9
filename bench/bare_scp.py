"""A bare pynetdicom Storage SCP that only writes what it receives to files.

This is the baseline ``bench/ingest.py`` holds ztbridge against: the cheapest thing a
pynetdicom-based receiver can do per instance. It accepts every storage SOP class in every
transfer syntax pynetdicom knows (whatever ``storescu`` proposes), and its C-STORE handler
writes the Part-10 file the standard pynetdicom way (preamble, ``DICM``, the file meta from
``event.file_meta``, then the received data set bytes, never decoded).

Like a real deployment it sets ``TCP_NODELAY`` on every accepted socket. pynetdicom itself
never does (see ``pynetdicom/transport.py``: only ``SO_REUSEADDR`` on the listening socket),
and without it each C-STORE response can sit behind Nagle's algorithm waiting on the peer's
delayed ACK. The option is set from an ``EVT_CONN_OPEN`` handler, which pynetdicom fires in
the acceptor thread right after ``accept()`` and before any PDU is read or written.

Run::

    .venv/bin/python bench/bare_scp.py --port 11113 --out-dir /tmp/received
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
import uuid
from io import BytesIO
from pathlib import Path
from types import FrameType
from typing import cast

from pydicom.filewriter import write_file_meta_info
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

DEFAULT_AE_TITLE = "BARESCP"
LOG = logging.getLogger("bare_scp")
_UID = re.compile(r"[0-9.]{1,64}")


def set_tcp_nodelay(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: disable Nagle's algorithm on the association's socket.

    ``event.assoc.dul.socket`` is the :class:`pynetdicom.transport.AssociationSocket`;
    its ``socket`` attribute is the accepted :class:`socket.socket` (an ``ssl.SSLSocket``
    when TLS is on, which forwards ``setsockopt`` to the TCP socket underneath).
    """
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the peer already closed it (e.g. a port probe)
            LOG.debug("TCP_NODELAY not set: %s", exc)


def make_store_handler(out_dir: Path, fsync: bool = False) -> evt.EventHandlerType:
    """Return an ``EVT_C_STORE`` handler bound to ``out_dir``.

    The handler writes ``<SOPInstanceUID>.dcm`` and answers 0x0000 (success), or 0xA700
    (out of resources) if the file cannot be written.
    """

    def handle_store(event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        uid = str(request.AffectedSOPInstanceUID)
        # The UID comes off the network: never let it name a path outside out_dir.
        name = uid if _UID.fullmatch(uid) else uuid.uuid4().hex
        path = out_dir / f"{name}.dcm"
        try:
            with path.open("wb") as f:
                f.write(b"\x00" * 128)
                f.write(b"DICM")
                write_file_meta_info(f, event.file_meta)  # type: ignore[arg-type]
                f.write(cast(BytesIO, request.DataSet).getvalue())
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
        except OSError:
            LOG.exception("cannot write %s", path)
            return 0xA700
        return 0x0000

    return (evt.EVT_C_STORE, handle_store)


def build_ae(ae_title: str, max_pdu: int | None) -> AE:
    """An AE accepting Verification and every storage SOP class in every transfer syntax."""
    ae = AE(ae_title=ae_title)
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    # Everything else (timeouts, PDU size, threading) stays at pynetdicom's defaults: the
    # baseline is what a plain pynetdicom SCP does.
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cast(str, cx.abstract_syntax), ALL_TRANSFER_SYNTAXES[:])
    ae.add_supported_context(Verification)
    return ae


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--aet", default=DEFAULT_AE_TITLE, help="our AE title")
    p.add_argument("--out-dir", type=Path, required=True, help="where received files go")
    p.add_argument(
        "--max-pdu",
        type=int,
        default=None,
        help="maximum PDU length we receive (default: pynetdicom's, 16382)",
    )
    p.add_argument(
        "--no-tcp-nodelay",
        action="store_true",
        help="leave Nagle's algorithm on (pynetdicom's own behaviour), for comparison",
    )
    p.add_argument("--fsync", action="store_true", help="fsync every file before answering")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    ae = build_ae(args.aet, args.max_pdu)
    handlers = [make_store_handler(args.out_dir, args.fsync)]
    if not args.no_tcp_nodelay:
        handlers.append((evt.EVT_CONN_OPEN, set_tcp_nodelay))
    server = ae.start_server((args.host, args.port), block=False, evt_handlers=handlers)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"bare_scp: {args.aet} listening on {args.host}:{args.port}, "
        f"TCP_NODELAY={'off' if args.no_tcp_nodelay else 'on'}, writing to {args.out_dir}",
        file=sys.stderr,
        flush=True,
    )
    stop.wait()
    if server is not None:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
