"""dicom_scp/protocol: what a peer's association request and DIMSE fragments must be,
decided on the bytes alone (the hostile cases in tests/hostile drive the same over sockets)."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF

from dicom_scp.protocol import (
    MessageAssembly,
    ProtocolViolationError,
    associate_rq_primitive,
    sop_class_mismatch,
)
from tests.support.rawdicom import (
    COMMAND_LAST,
    CT_IMAGE_STORAGE,
    DATA_LAST,
    MR_IMAGE_STORAGE,
    VERIFICATION,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    p_data,
    pdv,
)

CT = CT_IMAGE_STORAGE.decode()


def _rq(ids: list[int]) -> A_ASSOCIATE_RQ:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(associate_rq("CT01", contexts=[(i, VERIFICATION) for i in ids]))
    return pdu


@pytest.mark.parametrize("ids", [[2], [0], [1, 256 - 2], [3, 3]])
def test_even_zero_or_repeated_context_ids_are_violations(ids: list[int]) -> None:
    with pytest.raises(ProtocolViolationError) as caught:
        associate_rq_primitive(_rq(ids))
    assert caught.value.check == "presentation-context-id"


def test_a_valid_request_converts() -> None:
    primitive = associate_rq_primitive(_rq([1, 3, 255]))
    assert [c.context_id for c in primitive.presentation_context_definition_list] == [1, 3, 255]


def _feed(assembly: MessageAssembly, raw: bytes) -> bool:
    pdu = P_DATA_TF()
    pdu.decode(raw)
    return assembly.feed(pdu.to_primitive())


def _assembly() -> MessageAssembly:
    return MessageAssembly(DIMSEMessage(), {1, 3})


def test_a_c_store_assembles_over_several_pdus() -> None:
    a = _assembly()
    assert not _feed(a, p_data(pdv(3, COMMAND_LAST, c_store_rq(CT, "1.2.3"))))
    assert not _feed(a, p_data(pdv(3, 0x00, b"\x08\x00\x18\x00")))
    assert _feed(a, p_data(pdv(3, DATA_LAST, b"\x06\x00\x00\x001.2.3\x00")))
    request = a.request()
    assert isinstance(request, C_STORE) and request.AffectedSOPInstanceUID == "1.2.3"
    assert sop_class_mismatch(request, CT) is None
    reason = sop_class_mismatch(request, MR_IMAGE_STORAGE.decode())
    assert reason is not None and "is not the abstract syntax" in reason


@pytest.mark.parametrize(
    ("raw", "check"),
    [
        (p_data(pdv(1, DATA_LAST, b"\0\0")), "pdv-order"),
        (p_data(pdv(1, None)), "pdv"),
        (p_data(pdv(5, COMMAND_LAST, c_echo_rq())), "presentation-context"),
        (p_data(pdv(1, 0x01, c_echo_rq()[:8]), pdv(3, COMMAND_LAST, b"")), "presentation-context"),
        (p_data(pdv(1, COMMAND_LAST, c_echo_rq()), pdv(1, COMMAND_LAST, c_echo_rq())), "pdv-order"),
        (p_data(pdv(1, COMMAND_LAST, b"\x00\x00\x00\x00\x04")), "dimse-command"),
    ],
)
def test_broken_fragments_are_violations(raw: bytes, check: str) -> None:
    with pytest.raises(ProtocolViolationError) as caught:
        _feed(_assembly(), raw)
    assert caught.value.check == check


def test_a_uid_over_64_characters_is_a_violation_quoted_escaped() -> None:
    a = _assembly()
    assert not _feed(a, p_data(pdv(3, COMMAND_LAST, c_store_rq(CT, "1.2\n" + "3" * 70))))
    assert _feed(a, p_data(pdv(3, DATA_LAST, b"")))
    with pytest.raises(ProtocolViolationError) as caught:
        a.request()
    assert caught.value.check == "dimse-command" and "\n" not in caught.value.reason


def test_an_echo_names_verification() -> None:
    a = _assembly()
    assert _feed(a, p_data(pdv(1, COMMAND_LAST, c_echo_rq())))
    request = a.request()
    assert isinstance(request, C_ECHO)
    assert sop_class_mismatch(request, VERIFICATION.decode()) is None
    assert sop_class_mismatch(request, CT) is not None
