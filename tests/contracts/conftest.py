"""Fixtures: one chain and one deployed registry per module, rewound after every test.

Deploying and registering the cast once and reverting to an eth-tester snapshot after each
test keeps every test isolated while the whole directory stays well under 30 seconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from tests.contracts.harness import Registry, deploy, load_artifact

ROLES = ("ADMIN", "SENDER", "PATIENT", "DOCTOR", "AUDITOR")


def role_id(name: str) -> bytes:
    """The contract's role constant: keccak256("<NAME>_ROLE")."""
    return Web3.keccak(text=f"{name}_ROLE")


def hpke_key(label: str) -> bytes:
    """A stand-in 32-byte X25519 public key (the contract treats keys as opaque bytes)."""
    return hashlib.sha256(b"hpke-public:" + label.encode()).digest()


def record_id(label: str) -> bytes:
    """A stand-in keyed-hash record id (bytes32)."""
    return hashlib.sha256(b"record-id:" + label.encode()).digest()


def study_id(label: str) -> bytes:
    """A stand-in keyed-hash study id (bytes32)."""
    return hashlib.sha256(b"study-id:" + label.encode()).digest()


def capsule(label: str, size: int = 139) -> bytes:
    """Opaque sealed-capsule bytes; 139 is an X25519 HPKE seal of a study key + CID."""
    seed = hashlib.sha256(b"capsule:" + label.encode()).digest()
    return (seed * (size // 32 + 1))[:size]


CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # a CIDv1 (59 chars)


@dataclass(frozen=True)
class Cast:
    """Named accounts. Registered: one per role (plus spares); the rest are not."""

    admin: str
    admin2: str
    sender: str
    patient: str
    other_patient: str
    doctor: str
    other_doctor: str
    auditor: str
    suspended_doctor: str
    custodian: str
    outsider: str
    newcomer: str

    def by_role(self) -> dict[str, str]:
        """One representative caller per role, plus an unregistered account."""
        return {
            "ADMIN": self.admin,
            "SENDER": self.sender,
            "PATIENT": self.patient,
            "DOCTOR": self.doctor,
            "AUDITOR": self.auditor,
            "unregistered": self.outsider,
        }


#: The record the base state anchors for ``cast.patient``, and its study.
R1 = record_id("r1")
S1 = study_id("s1")


@dataclass
class World:
    """The deployed registry, its cast and handy values, shared by a module's tests."""

    reg: Registry
    cast: Cast
    tester: EthereumTester

    @property
    def fn(self) -> Any:
        """The contract's functions."""
        return self.reg.fn


@pytest.fixture(scope="module")
def world() -> World:
    """The base state every test starts from.

    The registry is deployed and every role registered; ``suspended_doctor`` is suspended;
    ``custodian`` is a PATIENT, not yet designated custodian; record ``R1`` of study ``S1`` is
    anchored for ``patient``, and ``S1`` is granted to ``other_doctor``.
    """
    backend = PyEVMBackend(
        genesis_state=PyEVMBackend.generate_genesis_state(num_accounts=len(fields(Cast)))
    )
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    names = [f.name for f in fields(Cast)]
    cast = Cast(**dict(zip(names, w3.eth.accounts[: len(names)], strict=True)))
    reg = deploy(w3, load_artifact(), cast.admin, hpke_key("admin"))
    fn = reg.fn
    for account, role in [
        (cast.admin2, "ADMIN"),
        (cast.sender, "SENDER"),
        (cast.patient, "PATIENT"),
        (cast.other_patient, "PATIENT"),
        (cast.doctor, "DOCTOR"),
        (cast.other_doctor, "DOCTOR"),
        (cast.auditor, "AUDITOR"),
        (cast.suspended_doctor, "DOCTOR"),
        (cast.custodian, "PATIENT"),
    ]:
        reg.send(fn.addUser(account, role_id(role), hpke_key(account)), cast.admin)
    reg.send(fn.suspendUser(cast.suspended_doctor), cast.admin)
    reg.send(
        fn.anchorRecord(cast.patient, R1, S1, record_id("root1"), CID, capsule("r1")), cast.sender
    )
    reg.send(fn.grant(S1, cast.other_doctor, capsule("s1-other-doctor")), cast.patient)
    return World(reg=reg, cast=cast, tester=tester)


@pytest.fixture
def w(world: World) -> Iterator[World]:
    """The module's world, rewound to its base state after the test."""
    snapshot = world.tester.take_snapshot()
    try:
        yield world
    finally:
        world.tester.revert_to_snapshot(snapshot)
