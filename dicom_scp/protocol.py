"""What a peer's A-ASSOCIATE-RQ and DIMSE fragments must be before pynetdicom acts on them.

Why: pynetdicom 3.0 finds some of these faults deep inside its state machine, where a fault
is an exception. An even presentation context ID raised from ``A_ASSOCIATE_RQ.to_primitive``
in action AE-6 and killed the DUL thread: no answer at all, the ARTIM timer closed the
socket 30 s later. A data set fragment with no command before it, a PDV with no control
header or an unknown Command Field raised while the message was assembled (the same death,
or a traceback), and a 200-character UID in a command was logged with a traceback quoting
the peer's bytes. Here each is checked first, as a plain function of what arrived, and
raised as ``ProtocolViolationError``: ``guard`` answers it with an A-ABORT and one log line.

Only the exception types pynetdicom and pydicom raise for bad values are turned into
violations (``_BAD_VALUE``); anything else is a bug to fix, which the fuzzing target
(tests/fuzz/fuzz_pdu.py) reports as a crash and ``guard`` still refuses, with a traceback.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from typing import Any

from pydicom.errors import BytesLengthException, InvalidDicomError
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, P_DATA

from gateway.errors import InvalidInputError
from gateway.logsafe import escape_controls

#: PDU types an association acceptor never receives: A-ASSOCIATE-AC and A-ASSOCIATE-RJ
#: answer a request, and an acceptor sends none.
ACCEPTOR_NEVER_RECEIVES = frozenset({0x02, 0x03})

# What pydicom and pynetdicom raise for a value they cannot take (checked against 3.0).
_BAD_VALUE = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    EOFError,
    OverflowError,
    NotImplementedError,
    InvalidDicomError,
    BytesLengthException,  # found by tests/fuzz/fuzz_pdu.py: an odd-length US in a command
)
_MAX_QUOTED = 200  # characters of a library's message kept in a log line or audit event


class ProtocolViolationError(InvalidInputError):
    """A peer sent what the DICOM Upper Layer or DIMSE protocol does not allow.

    ``check`` names the rule for the audit log; ``reason`` is one line, already escaped.
    """

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason


def _quoted(error: BaseException) -> str:
    """A library's message about a peer's value, as one escaped line of bounded length."""
    text = escape_controls(str(error))
    return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "..."


def associate_rq_primitive(pdu: A_ASSOCIATE_RQ) -> A_ASSOCIATE:
    """The A-ASSOCIATE primitive of a decoded request, or ``ProtocolViolationError``.

    Presentation context IDs must be odd integers from 1 to 255 and unique (PS3.8 9.3.2.2);
    the rest is what pynetdicom's own conversion accepts.
    """
    seen: set[int] = set()
    for item in pdu.presentation_context:
        context_id = item.presentation_context_id
        if not isinstance(context_id, int) or not 1 <= context_id <= 255 or context_id % 2 == 0:
            raise ProtocolViolationError(
                "presentation-context-id",
                f"presentation context ID {context_id} is not an odd integer from 1 to 255"
                " (PS3.8 9.3.2.2)",
            )
        if context_id in seen:
            raise ProtocolViolationError(
                "presentation-context-id", f"presentation context ID {context_id} proposed twice"
            )
        seen.add(context_id)
    try:
        primitive: A_ASSOCIATE = pdu.to_primitive()
    except _BAD_VALUE as e:
        raise ProtocolViolationError("associate-rq", f"invalid A-ASSOCIATE-RQ: {_quoted(e)}") from e
    return primitive


class MessageAssembly:
    """One DIMSE message being received, fragment by fragment (PS3.8 E.2, PS3.7 6.3.1).

    Every PDV of a message is on one accepted presentation context; the command fragments
    come first, the last of them flagged, then the data set's if the command announces one;
    nothing of the next message shares a P-DATA-TF with the end of this one (one request at
    a time: no asynchronous operations window is negotiated).
    """

    def __init__(self, message: DIMSEMessage, accepted: Container[int]) -> None:
        self.message = message
        self.accepted = accepted
        self.context_id: int | None = None
        self.command_done = False

    def feed(self, primitive: P_DATA, assoc: Any = None) -> bool:
        """Add a P-DATA's fragments; True once the message is whole.

        Each PDV is checked before pynetdicom decodes it; pynetdicom's decoding faults and
        a command it cannot decode are ``ProtocolViolationError`` too.
        """
        pdvs = primitive.presentation_data_value_list
        for i, (context_id, data) in enumerate(pdvs):
            self._check(context_id, data)
            if len(pdvs) == 1:
                one = primitive
            else:
                one = P_DATA()
                one.presentation_data_value_list = [[context_id, data]]  # type: ignore[list-item]
            try:
                done = bool(self.message.decode_msg(one, assoc))
            except _BAD_VALUE as e:
                raise ProtocolViolationError(
                    "dimse-command", f"undecodable DIMSE command set: {_quoted(e)}"
                ) from e
            if data[0] & 1 and data[0] & 2:
                self.command_done = True
            if done:
                if i != len(pdvs) - 1:
                    raise ProtocolViolationError(
                        "pdv-order",
                        "a P-DATA-TF goes on after the last fragment of its message"
                        " (one request at a time)",
                    )
                return True
        return False

    def _check(self, context_id: int, data: bytes) -> None:
        if not data:
            raise ProtocolViolationError("pdv", "a PDV with no message control header")
        if self.context_id is None:
            if context_id not in self.accepted:
                raise ProtocolViolationError(
                    "presentation-context",
                    f"a PDV on presentation context {context_id}, which was not accepted",
                )
            self.context_id = context_id
        elif context_id != self.context_id:
            raise ProtocolViolationError(
                "presentation-context",
                f"a PDV on presentation context {context_id} inside a message on context"
                f" {self.context_id}",
            )
        is_command = bool(data[0] & 1)
        if is_command and self.command_done:
            raise ProtocolViolationError(
                "pdv-order", "a command fragment after the command set was complete"
            )
        if not is_command and not self.command_done:
            raise ProtocolViolationError(
                "pdv-order", "a data set fragment before the command set was complete"
            )

    def request(self) -> Any:
        """The whole message as a DIMSE primitive, or ``ProtocolViolationError`` (a UID
        over 64 characters, a value of the wrong type)."""
        try:
            return self.message.message_to_primitive()
        except _BAD_VALUE as e:
            raise ProtocolViolationError(
                "dimse-command", f"invalid DIMSE command: {_quoted(e)}"
            ) from e


def sop_class_mismatch(request: Any, abstract_syntax: str) -> str | None:
    """Why a request may not be served on its presentation context, or None.

    A request's Affected SOP Class UID must be the abstract syntax negotiated for the
    presentation context it arrived on (PS3.7 9.3.1.1, 9.1.5): a C-STORE naming MR Image
    Storage on the context accepted for CT Image Storage was acknowledged before.
    """
    declared = getattr(request, "AffectedSOPClassUID", None)
    if declared is None or str(declared) == abstract_syntax:
        return None
    return (
        f"Affected SOP Class UID {escape_controls(str(declared))} is not the abstract syntax"
        f" {abstract_syntax} of the presentation context it was sent on"
    )
