"""Hand-built DICOM Upper Layer PDUs for tests that must send what no real peer would."""

from __future__ import annotations

import socket
import struct

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def pdu(kind: int, body: bytes) -> bytes:
    """A PDU: type, reserved, 4-byte length, body."""
    return struct.pack(">BBL", kind, 0, len(body)) + body


def associate_rq(
    calling: str,
    called: str = "ZTBRIDGE",
    extra_contexts: int = 0,
    syntaxes_per_context: int = 1,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification, padded with ``extra_contexts`` more."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += b"\0" * 32 + _item(0x10, APPLICATION_CONTEXT)
    contexts = [(1, VERIFICATION)] + [
        (3 + 2 * (i % 126), b"1.2.840.10008.5.1.4.1.1.2") for i in range(extra_contexts)
    ]
    for context_id, abstract in contexts:
        sub = _item(0x30, abstract) + _item(0x40, IMPLICIT_LE) * syntaxes_per_context
        body += _item(0x20, bytes((context_id, 0, 0, 0)) + sub)
    user = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, b"1.2.3.4")
    body += _item(0x50, user)
    return pdu(0x01, body)


def read_pdu(sock: socket.socket, timeout: float = 30.0) -> tuple[int, bytes] | None:
    """The next PDU (type, body), or None if the peer closed the connection."""
    sock.settimeout(timeout)
    header = _exact(sock, 6)
    if header is None:
        return None
    kind, _, length = struct.unpack(">BBL", header)
    body = _exact(sock, length)
    return (kind, body) if body is not None else None


def _exact(sock: socket.socket, n: int) -> bytes | None:
    out = b""
    while len(out) < n:
        try:
            chunk = sock.recv(n - len(out))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        out += chunk
    return out


def closed(sock: socket.socket, timeout: float = 30.0) -> bool:
    """Whether the peer closes (EOF or reset) within ``timeout``, after any pending PDUs."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
