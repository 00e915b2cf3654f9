"""Which registry events a user's Activity page shows: a patient's records and grants, a
doctor's received grants, the account's own events; never anyone else's."""

from __future__ import annotations

from gateway.access import Role
from gateway.accounts.activity import chain_activity
from gateway.ledger.ledger import LedgerEvent

ANN, BOB, LEE = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
S1, S2 = b"\x01" * 32, b"\x02" * 32
NAMES = {ANN: "ann", BOB: "bob", LEE: "drlee"}


def _e(name: str, block: int, **args: object) -> LedgerEvent:
    return LedgerEvent(name, dict(args), block, bytes([block]) * 32, 0)


EVENTS = [
    _e("UserAdded", 1, account=ANN.upper().replace("0X", "0x")),
    _e("RecordAnchored", 2, patient=ANN, studyId=S1),
    _e("RecordAnchored", 3, patient=BOB, studyId=S2),
    _e("AccessGranted", 4, patient=ANN, doctor=LEE, studyId=S1),
    _e("AccessGranted", 5, patient=BOB, doctor=LEE, studyId=S2),
    _e("AccessRevoked", 6, patient=ANN, doctor=LEE, studyId=S1),
    _e("RecordTransferred", 7, patient=BOB, studyId=S2),
    _e("AuditAnchored", 8, index=1),
]


def test_a_patient_sees_own_records_and_grants_newest_first() -> None:
    shown, page = chain_activity(EVENTS, ANN, Role.PATIENT, {S1: "1.2.3"}, NAMES, 0, 50)
    assert [(c.name, c.block_number) for c in shown] == [
        ("AccessRevoked", 6),
        ("AccessGranted", 4),
        ("RecordAnchored", 2),
        ("UserAdded", 1),  # addresses compare in any case
    ]
    assert {c.study for c in shown if c.study} == {"1.2.3"}
    assert shown[0].counterpart == "drlee" and not page.more


def test_a_doctor_sees_received_grants_only() -> None:
    shown, _ = chain_activity(EVENTS, LEE, Role.DOCTOR, {S2: "9.8.7"}, NAMES, 0, 50)
    assert [(c.name, c.counterpart) for c in shown] == [
        ("AccessRevoked", "ann"),
        ("AccessGranted", "bob"),
        ("AccessGranted", "ann"),
    ]
    # a study no longer shared shows by its opaque on-chain id, never its UID
    assert shown[0].study == "0x" + S1.hex() and shown[1].study == "9.8.7"


def test_pages() -> None:
    first, page = chain_activity(EVENTS, BOB, Role.PATIENT, {}, NAMES, 0, 2)
    assert [c.block_number for c in first] == [7, 5] and page.more
    rest, page = chain_activity(EVENTS, BOB, Role.PATIENT, {}, NAMES, 2, 2)
    assert [c.block_number for c in rest] == [3] and not page.more
