"""C-STORE responses written straight to the socket by the thread that answers them.

Why: a modality waits for each C-STORE response before it sends the next image, so every
microsecond between our handler's return and the response leaving is lost throughput. In
pynetdicom 3.0 that path builds a pydicom Dataset for the seven-element command set, encodes
it, queues a P-DATA primitive, wakes the DUL thread, runs the state machine and builds the
PDU again: about 0.5 ms of a ~4 ms instance. Here the common case (a plain status, no error
comment or offending element, the association established and nothing else queued to send)
is encoded by hand, byte for byte what pynetdicom would send (tests compare the two), and
sent under a lock that the DUL thread's own sends take too, so PDUs never interleave.
Anything else goes the stock way. Called from ``guard.BoundedDIMSE.send_msg`` once it has
counted the request answered.

Why it is safe to bypass the DUL's queue: the only P-DATA a storage SCP sends are DIMSE
responses, and we negotiate no asynchronous operations window, so the peer sends its next
request only after it has our previous response: nothing can be waiting in the queue to go
out before this one (and if something is, the stock path is taken). Sending P-DATA in
state Sta6 leaves the state machine in Sta6 (PS3.8 9.2, action DT-1), so skipping it loses
no state; the association's DIMSE-sent notification is not fired for these responses.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom.dimse_primitives import C_STORE

_COMMAND_FIELD_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_LAST_COMMAND_FRAGMENT = 0x03
_P_DATA_TF = 0x04


def _us(element: int, value: int) -> bytes:
    """An implicit VR little endian US element of group 0000."""
    return struct.pack("<HHIH", 0x0000, element, 2, value)


def _ui(element: int, uid: str) -> bytes:
    """An implicit VR little endian UI element of group 0000, padded to even length."""
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def c_store_rsp_command(sop_class: str, sop_instance: str, message_id: int, status: int) -> bytes:
    """The C-STORE-RSP command set (PS3.7 9.3.1.2), implicit VR little endian, with its
    group length first, elements in tag order."""
    body = (
        _ui(0x0002, sop_class)
        + _us(0x0100, _COMMAND_FIELD_C_STORE_RSP)
        + _us(0x0120, message_id)
        + _us(0x0800, _NO_DATA_SET)
        + _us(0x0900, status)
        + _ui(0x1000, sop_instance)
    )
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def p_data_tf(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU carrying ``command`` as one PDV: the last (only) command fragment."""
    pdv = bytes((context_id, _LAST_COMMAND_FRAGMENT)) + command
    item = struct.pack(">I", len(pdv)) + pdv
    return struct.pack(">BBI", _P_DATA_TF, 0x00, len(item)) + item


def encodable(primitive: Any) -> bool:
    """Whether ``primitive`` is a C-STORE response this module encodes exactly."""
    return (
        type(primitive) is C_STORE
        and primitive.MessageIDBeingRespondedTo is not None
        and primitive.Status is not None
        and primitive.AffectedSOPClassUID is not None
        and primitive.AffectedSOPInstanceUID is not None
        and primitive.ErrorComment is None
        and primitive.OffendingElement is None
    )


def send_c_store_rsp(assoc: Any, primitive: Any, context_id: int) -> bool:
    """Write a plain C-STORE response straight to the socket; False: send it the stock way.

    Needs the association's DUL to serialise its own sends on ``ztb_send_lock``
    (``guard.BoundedDUL``); without it nothing is sent here.
    """
    dul = assoc.dul
    lock = getattr(dul, "ztb_send_lock", None)
    if (
        lock is None
        or not encodable(primitive)
        or dul.state_machine.current_state != "Sta6"
        or not dul.to_provider_queue.empty()
        or dul.socket is None
    ):
        return False
    command = c_store_rsp_command(
        str(primitive.AffectedSOPClassUID),
        str(primitive.AffectedSOPInstanceUID),
        int(primitive.MessageIDBeingRespondedTo),
        int(primitive.Status),
    )
    peer_max = assoc.dimse.maximum_pdu_size
    if peer_max and len(command) + 6 > peer_max:
        return False
    pdu = p_data_tf(context_id, command)
    with lock:
        dul.socket.send(pdu)
    return True
