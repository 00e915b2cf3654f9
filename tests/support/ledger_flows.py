"""One scenario of the registry's newer verbs, run through ``Ledger`` on every backend.

Why shared: the embedded chain (py-evm) and anvil must run the same bytecode the same way; the
scenario is written once and called from ``tests/ledger/test_embedded.py`` and
``tests/ledger/test_rpc_anvil.py`` with their own chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from eth_account.signers.local import LocalAccount

from gateway.ledger import Ledger, LedgerRevertError, Role
from gateway.ledger.ledger import CONTRACT_VERSION

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def h(label: str) -> bytes:
    """A stand-in bytes32."""
    return hashlib.sha256(label.encode()).digest()


def transfer_and_study_grants(
    ledger: Ledger,
    admin: LocalAccount,
    sender: LocalAccount,
    custodian: LocalAccount,
    patient: LocalAccount,
    doctor: LocalAccount,
    fund: Callable[[str], None],
) -> None:
    """The custodian's study is transferred to its patient, who grants it to a doctor; a
    batch anchored after the grant is readable by the doctor at once; revoke ends it."""
    for who in (admin, sender, custodian, patient):
        fund(who.address)
    assert ledger.contract_version() == CONTRACT_VERSION and ledger.is_current()
    for who, role in ((sender, Role.SENDER), (custodian, Role.PATIENT), (patient, Role.PATIENT)):
        ledger.register_user(admin, who.address, role, h(f"{who.address}-hpke"))
    ledger.register_user(admin, doctor.address, Role.DOCTOR, h("doctor-hpke"))
    assert ledger.custodian() is None
    ledger.designate_custodian(admin, custodian.address)
    assert ledger.custodian() == custodian.address
    study = h("study-x")
    ledger.anchor_study(
        sender, custodian.address, h("x1"), h("root-x1"), CID, b"cap" * 40, study_id=study
    )
    assert ledger.study_owner(study) == custodian.address
    assert ledger.record_study(h("x1")) == study and ledger.record_study(h("none")) is None
    with pytest.raises(LedgerRevertError) as caught:
        ledger.transfer_record(sender, h("x1"), patient.address, b"patient-cap")
    assert caught.value.name == "NotAdmin"
    receipt = ledger.transfer_record(admin, h("x1"), patient.address, b"patient-cap" * 10)
    assert receipt.gas_used > 0
    moved = ledger.record_by_id(h("x1"))
    assert moved is not None and moved.patient == patient.address
    assert moved.sealed_capsule == b"patient-cap" * 10 and moved.merkle_root == h("root-x1")
    assert ledger.study_owner(study) == patient.address
    assert ledger.record_count(custodian.address) == 0
    with pytest.raises(LedgerRevertError) as caught:  # the custodian no longer grants
        ledger.grant_study(custodian, study, doctor.address, b"c")
    assert caught.value.name == "NotStudyOwner"
    ledger.grant_study(patient, study, doctor.address, b"doc-cap" * 20)
    assert ledger.study_grant(study, doctor.address)[0]
    # A later batch, anchored to the patient directly, is covered by the earlier grant.
    ledger.anchor_study(
        sender, patient.address, h("x2"), h("root-x2"), CID, b"cap" * 40, study_id=study
    )
    assert ledger.has_access(h("x2"), doctor.address) and ledger.has_access(h("x1"), doctor.address)
    assert ledger.has_study_access(study, doctor.address)
    ledger.revoke_study(patient, study, doctor.address)
    assert not ledger.has_access(h("x2"), doctor.address)
    names = [e.name for e in ledger.events_since(0)]
    assert names.count("RecordTransferred") == 1 and "CustodianDesignated" in names
