"""The hand-encoded C-STORE response must be exactly what pynetdicom would send."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from dicom_scp import fastpath

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"


def _rsp(status: int, instance: str, sop_class: str = CT, message_id: int = 7) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageID = message_id
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = instance
    rsp.Status = status
    return rsp


def _pynetdicom_pdu(rsp: C_STORE, context_id: int, max_pdu: int) -> bytes:
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    (pdata,) = list(msg.encode_msg(context_id, max_pdu))
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    return bytes(pdu.encode())


@pytest.mark.parametrize(
    ("status", "instance", "sop_class", "message_id", "context_id"),
    [
        (0x0000, "1.2.3.4", CT, 1, 1),  # even-length UID
        (0x0000, "1.2.3.45", CT, 65535, 255),  # odd-length UID: padded with NUL
        (0xA900, "1.2.826.0.1.3680043.8.498.1234567890123456789012345678901", MR, 2, 3),
        (0xC000, "2.25.1", CT, 300, 5),
        (0xA700, "1.2", MR, 0, 127),
        (0x0110, "9" * 64, CT, 12345, 9),
    ],
)
def test_same_bytes_as_pynetdicom(
    status: int, instance: str, sop_class: str, message_id: int, context_id: int
) -> None:
    rsp = _rsp(status, instance, sop_class, message_id)
    assert fastpath.encodable(rsp)
    ours = fastpath.p_data_tf(
        context_id, fastpath.c_store_rsp_command(sop_class, instance, message_id, status)
    )
    assert ours == _pynetdicom_pdu(rsp, context_id, 16384)


def test_responses_with_more_go_the_stock_way() -> None:
    with_comment = _rsp(0xA900, "1.2.3")
    with_comment.ErrorComment = "bad"
    assert not fastpath.encodable(with_comment)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CT
    request.AffectedSOPInstanceUID = "1.2.3"
    assert not fastpath.encodable(request)
