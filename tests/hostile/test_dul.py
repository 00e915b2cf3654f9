"""Hostile association and DIMSE bytes (issue #8, items 3-5): each refused at once with the
standard answer and one log line, no thread dying of it, no traceback, no byte of the peer's
reaching the log raw; the gateway serves an echo and a store right after every case, and at
the end everything it acknowledged reads back byte-exact.

Raw sockets throughout: pynetdicom and DCMTK refuse to send any of this.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import MRImageStorage

from tests.hostile.harness import (
    HOSTILE,
    HOSTILE_TLS,
    P_DATA,
    HostileGateway,
    abort_reason,
    rss,
    threads,
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
    closed,
    command_set,
    dimse,
    dimse_status,
    p_data,
    pdu,
    pdv,
    read_pdu,
    ui,
    us,
)

# An answer must come at once; before the fix an even context ID got none until the ARTIM
# timer (acse_timeout, 30 s here as by default) closed the socket.
PROMPT = 5.0
PROVIDER, INVALID_PARAMETER, UNEXPECTED_PDU = 0x02, 0x06, 0x02
SOP_CLASS_NOT_SUPPORTED = 0x0122
# Over the whole module, from the first case's warmed-up gateway: a few MiB are normal
# (connection threads come and go); an association's worth of leaked buffers per case is not.
RSS_GROWTH_LIMIT = 64 << 20


@pytest.fixture(scope="module")
def hg(family: HostileGateway) -> Iterator[HostileGateway]:
    family.alive()  # warm up before any baseline
    family.baseline_rss = rss(family.gw)
    family.baseline_threads = threads(family.gw)
    yield family


def _refused_once(hg: HostileGateway, mark: int, check: str) -> None:
    """One log line for the refusal, naming its check; nothing unclean; still serving."""
    hg.alive()
    text = hg.clean_since(mark)
    lines = [line for line in text.splitlines() if f"refused ({check})" in line]
    assert len(lines) == 1, text[-3000:]
    loud = [line for line in text.splitlines() if re.match(r"\S+ \S+ (WARNING|ERROR)", line)]
    assert loud == lines, loud  # nothing else said about it (pydicom repeated it 3 times)


def _rq(ids: list[int], calling: str = HOSTILE) -> bytes:
    return associate_rq(calling, contexts=[(i, VERIFICATION) for i in ids])


@pytest.mark.parametrize("ids", [[2], [0], [1, 2], [1, 1]], ids=["2", "0", "1-and-2", "1-twice"])
@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_even_or_repeated_presentation_context_id_is_aborted_at_once(
    hg: HostileGateway, ids: list[int], tls: bool
) -> None:
    mark = hg.mark()
    answer = hg.exchange(_rq(ids, HOSTILE_TLS if tls else HOSTILE), tls=tls, timeout=PROMPT)
    assert abort_reason(answer) == (PROVIDER, INVALID_PARAMETER), answer
    _refused_once(hg, mark, "presentation-context-id")


def test_associate_ac_and_rj_sent_to_the_acceptor(hg: HostileGateway) -> None:
    for kind, body in ((0x02, b"\0" * 68), (0x03, bytes((0, 1, 1, 1)))):
        mark = hg.mark()
        answer = hg.exchange(pdu(kind, body), timeout=PROMPT)
        assert abort_reason(answer) == (PROVIDER, UNEXPECTED_PDU), (kind, answer)
        _refused_once(hg, mark, "unexpected-pdu")
        with hg.established() as s:  # inside an association too
            mark = hg.mark()
            s.sendall(pdu(kind, body))
            answer = read_pdu(s, PROMPT)
            assert answer is not None and abort_reason(answer) == (PROVIDER, UNEXPECTED_PDU)
            assert closed(s, PROMPT)
        _refused_once(hg, mark, "unexpected-pdu")


ODD_COMMAND_FIELD = struct.pack("<HHI", 0x0000, 0x0100, 3) + b"\x30\x00\x00"  # US of 3 bytes
# Each: what the peer sends inside an established association, and the check it breaks.
BROKEN_DIMSE = {
    "data set with no command": (p_data(pdv(1, DATA_LAST, b"\x08\x00\x18\x00")), "pdv-order"),
    "PDV with no control header": (p_data(pdv(1, None)), "pdv"),
    "context not accepted": (p_data(pdv(7, COMMAND_LAST, c_echo_rq())), "presentation-context"),
    "two contexts in one message": (
        p_data(pdv(1, 0x01, c_echo_rq()[:10]), pdv(3, COMMAND_LAST, c_echo_rq()[10:])),
        "presentation-context",
    ),
    "command inside a data set": (
        p_data(
            pdv(3, COMMAND_LAST, c_store_rq(CT_IMAGE_STORAGE, "1.2.3")),
            pdv(3, 0x00, b"\x08\x00\x18\x00"),
            pdv(3, COMMAND_LAST, c_echo_rq()),
        ),
        "pdv-order",
    ),
    "unknown command field": (
        p_data(pdv(1, COMMAND_LAST, command_set(ui(0x0002, VERIFICATION), us(0x0100, 0x1234)))),
        "dimse-command",
    ),
    "odd-length command field": (  # found by tests/fuzz/fuzz_pdu.py
        p_data(pdv(1, COMMAND_LAST, command_set(ui(0x0002, VERIFICATION), ODD_COMMAND_FIELD))),
        "dimse-command",
    ),
    "command with no command field": (
        p_data(pdv(1, COMMAND_LAST, command_set(ui(0x0002, VERIFICATION)))),
        "dimse-command",
    ),
    "200-character UID in a command": (
        dimse(3, c_store_rq(CT_IMAGE_STORAGE, "1." * 99 + "1"), b"\x08\x00\x18\x00"),
        "dimse-command",
    ),
    "echo then another message in the same PDU": (
        p_data(pdv(1, COMMAND_LAST, c_echo_rq(1)), pdv(1, COMMAND_LAST, c_echo_rq(2))),
        "pdv-order",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_DIMSE))
def test_broken_dimse_is_aborted_with_one_line(hg: HostileGateway, case: str) -> None:
    raw, check = BROKEN_DIMSE[case]
    with hg.established() as s:
        mark = hg.mark()
        s.sendall(raw)
        answer = read_pdu(s, PROMPT)
        assert answer is not None and abort_reason(answer) == (PROVIDER, INVALID_PARAMETER)
        assert closed(s, PROMPT)
    _refused_once(hg, mark, check)


FAKE_LINE = "2026-12-01 12:00:00,000 INFO    ztbridge.dicom: association from CT01 accepted"


def test_a_uid_holding_a_fake_log_line_and_an_escape_is_logged_escaped(hg: HostileGateway) -> None:
    """The probe's 69-character Affected SOP Instance UID: a newline, a forged line, ESC."""
    forged = "1.2.3\n" + FAKE_LINE[:55] + "\x1b[2J"
    assert len(forged) == 65
    forged += "9" * (69 - len(forged))
    with hg.established() as s:
        mark = hg.mark()
        s.sendall(dimse(3, c_store_rq(CT_IMAGE_STORAGE, forged), b"\x08\x00\x18\x00"))
        answer = read_pdu(s, PROMPT)
        assert answer is not None and abort_reason(answer) == (PROVIDER, INVALID_PARAMETER)
    _refused_once(hg, mark, "dimse-command")
    text = hg.log_since(mark)
    assert "\x1b" not in text and not any(
        line.startswith(FAKE_LINE[:23]) for line in text.splitlines()
    )
    assert "1.2.3\\n2026-12-01" in text, text[-2000:]


def _implicit(ds: object) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)  # type: ignore[arg-type]
    return fp.getvalue()


def test_sop_class_must_match_its_presentation_context(hg: HostileGateway) -> None:
    """Item 3: a C-STORE-RQ and data set both saying MR Image Storage, on the context
    negotiated for CT Image Storage, is refused "SOP Class Not Supported"; the association
    goes on, and a CT image on the same context is stored."""
    files = hg.instances(2)
    mr = dcmread(files[0])
    mr.SOPClassUID, mr.Modality = MRImageStorage, "MR"
    ct = dcmread(files[1])
    rq = associate_rq(
        HOSTILE, contexts=[(1, VERIFICATION), (3, CT_IMAGE_STORAGE), (5, MR_IMAGE_STORAGE)]
    )
    with hg.established(rq=rq) as s:
        mark = hg.mark()
        s.sendall(dimse(3, c_store_rq(MRImageStorage, mr.SOPInstanceUID, 1), _implicit(mr)))
        answer = read_pdu(s, PROMPT)
        assert answer is not None and answer[0] == P_DATA, answer
        assert dimse_status(answer) == SOP_CLASS_NOT_SUPPORTED, answer
        # The association is still there: a CT image on the CT context is stored.
        data = _implicit(ct)
        s.sendall(dimse(3, c_store_rq(ct.SOPClassUID, ct.SOPInstanceUID, 2), data))
        answer = read_pdu(s, PROMPT)
        assert dimse_status(answer) == 0x0000, answer
        hg.remember_dataset(str(ct.SOPInstanceUID), str(ct.StudyInstanceUID), data)
        s.sendall(pdu(0x05, b"\0" * 4))  # A-RELEASE-RQ
        assert read_pdu(s, PROMPT) is not None
    text = hg.clean_since(mark)
    assert f"refused instance {mr.SOPInstanceUID}" in text and "is not the abstract syntax" in text
    hg.alive()


def test_an_echo_on_a_storage_context_is_refused(hg: HostileGateway) -> None:
    with hg.established() as s:
        mark = hg.mark()
        s.sendall(dimse(3, c_echo_rq()))
        answer = read_pdu(s, PROMPT)
        assert dimse_status(answer) == SOP_CLASS_NOT_SUPPORTED, answer
        s.sendall(dimse(1, c_echo_rq(2)))  # on its own context: fine
        assert dimse_status(read_pdu(s, PROMPT)) == 0x0000
    assert "refused (0x0122): Affected SOP Class UID 1.2.840.10008.1.1" in hg.clean_since(mark)


def test_memory_bounded_and_everything_acknowledged_reads_back(hg: HostileGateway) -> None:
    growth = rss(hg.gw) - hg.baseline_rss
    print(f"RSS growth over the module: {growth >> 20} MiB")
    assert growth < RSS_GROWTH_LIMIT
    assert len(hg.acknowledged) > 20
    hg.read_back()
    # No thread outlives its connection (an invalid request's thread once waited for the
    # ARTIM timer): back to the warmed-up count once the last association has wound down.
    deadline = time.monotonic() + 30
    while threads(hg.gw) > hg.baseline_threads and time.monotonic() < deadline:
        time.sleep(0.2)
    assert threads(hg.gw) <= hg.baseline_threads
