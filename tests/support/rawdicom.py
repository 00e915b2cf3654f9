"""Hand-built DICOM Upper Layer PDUs for tests that must send what no real peer would."""

from __future__ import annotations

import socket
import struct

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
CT_IMAGE_STORAGE = b"1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = b"1.2.840.10008.5.1.4.1.1.4"

# DIMSE (PS3.7 E.1) and PDV control headers (PS3.8 E.2).
C_STORE_RQ, C_ECHO_RQ = 0x0001, 0x0030
NO_DATA_SET, DATA_SET_PRESENT = 0x0101, 0x0000
COMMAND_LAST, DATA_MORE, DATA_LAST = 0x03, 0x00, 0x02


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
    contexts: list[tuple[int, bytes]] | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification, padded with ``extra_contexts`` more (CT
    Image Storage, IDs 3, 5, ...); or exactly ``contexts`` (ID, abstract syntax), whatever
    their IDs."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += b"\0" * 32 + _item(0x10, APPLICATION_CONTEXT)
    if contexts is None:
        contexts = [(1, VERIFICATION)] + [
            (3 + 2 * (i % 126), CT_IMAGE_STORAGE) for i in range(extra_contexts)
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


def us(element: int, value: int) -> bytes:
    """A group 0000 US element, implicit VR little endian."""
    return struct.pack("<HHIH", 0x0000, element, 2, value)


def ui(element: int, value: str | bytes) -> bytes:
    """A group 0000 UI element holding exactly ``value`` (padded with NUL to even length):
    any bytes, so a test can send what no encoder would."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    if len(raw) % 2:
        raw += b"\0"
    return struct.pack("<HHI", 0x0000, element, len(raw)) + raw


def command_set(*elements: bytes) -> bytes:
    """A command set of ``elements`` (give them in tag order), with its group length."""
    body = b"".join(elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    """A C-ECHO-RQ command set."""
    return command_set(
        ui(0x0002, VERIFICATION),
        us(0x0100, C_ECHO_RQ),
        us(0x0110, message_id),
        us(0x0800, NO_DATA_SET),
    )


def c_store_rq(sop_class: str | bytes, sop_instance: str | bytes, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set (priority medium, a data set follows)."""
    return command_set(
        ui(0x0002, sop_class),
        us(0x0100, C_STORE_RQ),
        us(0x0110, message_id),
        us(0x0700, 0),
        us(0x0800, DATA_SET_PRESENT),
        ui(0x1000, sop_instance),
    )


def pdv(context_id: int, header: int | None, payload: bytes = b"") -> bytes:
    """One presentation data value item; ``header`` None leaves out the control header."""
    value = bytes([context_id]) + (bytes([header]) if header is not None else b"") + payload
    return struct.pack(">L", len(value)) + value


def p_data(*pdvs: bytes) -> bytes:
    """A P-DATA-TF PDU of the given PDV items."""
    return pdu(0x04, b"".join(pdvs))


def dimse(
    context_id: int, command: bytes, dataset: bytes | None = None, chunk: int = 16000
) -> bytes:
    """A whole DIMSE message as P-DATA-TF PDUs: the command in one PDV, the data set in
    PDVs of at most ``chunk`` bytes."""
    out = p_data(pdv(context_id, COMMAND_LAST, command))
    if dataset is not None:
        pieces = [dataset[i : i + chunk] for i in range(0, len(dataset), chunk)] or [b""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            out += p_data(pdv(context_id, DATA_LAST if last else DATA_MORE, piece))
    return out


def dimse_status(answer: tuple[int, bytes] | None) -> int | None:
    """The Status (0000,0900) of a response PDU (a P-DATA-TF of one command PDV)."""
    if answer is None or answer[0] != 0x04:
        return None
    body = answer[1]
    command = body[6:]  # PDV length (4), context ID, control header
    at = 8 + 4  # past the group length element
    while at + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, at)
        if (group, element) == (0x0000, 0x0900):
            return int(struct.unpack_from("<H", command, at + 8)[0])
        at += 8 + length
    return None
