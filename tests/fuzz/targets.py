"""What the fuzzers feed: the gateway's own paths for a peer's bytes, minus the network and
the storage. Each target returns normally for any input it refuses the way ztbridge refuses
(a ``ZtbridgeError``: a DIMSE status, a protocol violation); any other exception, or an
input that never returns, is a bug the fuzzer reports, and its input becomes a regression
file under tests/fuzz/regressions/<target>/ that test_fuzz.py replays on every run.

``dataset``: the ingest path's parsing of a C-STORE data set (inflate for a deflated
transfer syntax, the one-pass ``scan``, the indexed attributes, the identifiers, the header
cut). ``pdu``: what the DICOM edge does with a PDU a peer sent, as ``dicom_scp.guard`` does
it: decode, the A-ASSOCIATE-RQ checks and the acceptor's negotiation, or a stream of P-DATA-TF
PDUs assembled into DIMSE messages and checked against their presentation context.
"""

from __future__ import annotations

import struct
from typing import Any

from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import negotiate_as_acceptor

from dicom_scp.contexts import storage_contexts, verification_context
from dicom_scp.protocol import (
    MessageAssembly,
    ProtocolViolationError,
    associate_rq_primitive,
    sop_class_mismatch,
)
from gateway.dataset import DEFLATED, file_meta, inflate, scan
from gateway.errors import ZtbridgeError
from gateway.header import header_sections
from gateway.metadata import WANTED, first_strings, read_indexed
from gateway.validation import required_identifiers

TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
)
MAX_INSTANCE_BYTES = 1 << 20  # a fuzz input is small; the inflate limit still applies


def dataset(data: bytes) -> None:
    """First byte: the transfer syntax (of ``TRANSFER_SYNTAXES``); the rest: the data set."""
    if not data:
        return
    ts = TRANSFER_SYNTAXES[data[0] % len(TRANSFER_SYNTAXES)]
    raw = data[1:]
    try:
        plain = inflate(raw, MAX_INSTANCE_BYTES) if ts in DEFLATED else raw
        layout = scan(plain, ts, WANTED)
        doc = read_indexed(plain, layout)
        ids = required_identifiers(first_strings(doc), None, None, False)
        meta = file_meta(ids["SOPClassUID"], ids["SOPInstanceUID"], ts, "FUZZ")
        header_sections(meta, ts, plain, layout, ids["SOPClassUID"], ids["SOPInstanceUID"], None)
    except ZtbridgeError:
        return


def _pdus(stream: bytes) -> list[bytes]:
    """Split a byte stream into PDUs by their declared lengths, as the DUL reader does."""
    out = []
    at = 0
    while at + 6 <= len(stream):
        (length,) = struct.unpack_from(">L", stream, at + 2)
        end = at + 6 + length
        if end > len(stream):
            break
        out.append(stream[at:end])
        at = end
    return out


def _decode(raw: bytes) -> Any:
    """The PDU as pynetdicom decodes it; None when it does not (guard.BoundedDUL answers an
    undecodable PDU with Evt19 and one log line, whatever the exception)."""
    cls = {0x01: A_ASSOCIATE_RQ, 0x04: P_DATA_TF}.get(raw[0])
    if cls is None:
        return None
    pdu = cls()
    try:
        pdu.decode(raw)
    except Exception:
        return None
    return pdu


def _associate(pdu: Any) -> None:
    primitive = associate_rq_primitive(pdu)
    # What the acceptor then reads of it (pynetdicom's ACSE and our admission).
    str(primitive.calling_ae_title).strip()
    str(primitive.called_ae_title).strip()
    roles = {
        uid: (item.scu_role, item.scp_role)
        for uid, item in _role_items(primitive.user_information).items()
    }
    negotiate_as_acceptor(primitive.presentation_context_definition_list, _SUPPORTED, roles)


def _role_items(user_information: list[Any]) -> dict[Any, Any]:
    return {
        item.sop_class_uid: item
        for item in user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
    }


def _dimse(pdus: list[Any]) -> None:
    contexts = {1: "1.2.840.10008.1.1", 3: "1.2.840.10008.5.1.4.1.1.2"}
    assembly: MessageAssembly | None = None
    for pdu in pdus:
        primitive = pdu.to_primitive()  # DT-2 does this before the guard sees it
        if assembly is None:
            assembly = MessageAssembly(DIMSEMessage(), contexts)
        if assembly.feed(primitive):
            request = assembly.request()
            context = assembly.context_id
            assert context is not None
            sop_class_mismatch(request, contexts[context])
            str(getattr(request, "AffectedSOPInstanceUID", None))
            assembly = None


def pdu(data: bytes) -> None:
    """A byte stream of PDUs from a peer: an A-ASSOCIATE-RQ alone, or P-DATA-TF PDUs (one
    association's worth of DIMSE fragments); other PDU types are the DUL's to refuse."""
    decoded = [p for p in (_decode(raw) for raw in _pdus(data)) if p is not None]
    if not decoded:
        return
    try:
        if data[0] == 0x01:
            for rq in (p for p in decoded if isinstance(p, A_ASSOCIATE_RQ)):
                _associate(rq)
                break
        else:
            _dimse([p for p in decoded if isinstance(p, P_DATA_TF)])
    except ProtocolViolationError:
        return


_SUPPORTED = [*storage_contexts(), verification_context()]
TARGETS = {"dataset": dataset, "pdu": pdu}
