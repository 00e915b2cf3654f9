"""The registry contract in the gateway's vocabulary: register, anchor, transfer, grant, ask.

Why a wrapper rather than raw web3 calls in the services: callers speak in users, studies and
grants, get typed results and one error family (a refusal is ``LedgerRevertError`` carrying the
contract's custom error name), and never see ABI encoding, nonces or receipts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils.abi import event_abi_to_log_topic
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import BadFunctionCallOutput
from web3.types import TxParams, TxReceipt

from gateway.ledger.artifact import Artifact, registry_artifact
from gateway.ledger.chain import GAS_HEADROOM, REVERTS, Chain, checksum
from gateway.ledger.errors import LedgerConfigError, LedgerRevertError
from gateway.ledger.revert import ErrorDecoder

#: The contract interface this gateway writes to (``VERSION()``; 1 when the getter is absent).
CONTRACT_VERSION = 2
#: Just the ``VERSION()`` getter, so the version of any registry can be asked, whatever ABI
#: the ``Ledger`` was built with.
_VERSION_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "VERSION",
        "inputs": [],
        "outputs": [{"name": "", "type": "uint256"}],
        "stateMutability": "view",
    }
]


class Role(enum.Enum):
    """The registry's roles; the value is the on-chain id keccak256("<NAME>_ROLE")."""

    ADMIN = "ADMIN"
    SENDER = "SENDER"
    PATIENT = "PATIENT"
    DOCTOR = "DOCTOR"
    AUDITOR = "AUDITOR"

    @property
    def role_id(self) -> bytes:
        """The bytes32 role id the contract uses."""
        return bytes(Web3.keccak(text=f"{self.value}_ROLE"))

    @classmethod
    def from_id(cls, role_id: bytes) -> Role | None:
        """The role for an on-chain id; None for ``0x00…`` (unregistered)."""
        for role in cls:
            if role.role_id == bytes(role_id):
                return role
        return None


@dataclass(frozen=True)
class AnchorReceipt:
    """Proof a transaction was mined: its hash, block and gas."""

    tx_hash: bytes
    block_number: int
    gas_used: int


@dataclass(frozen=True)
class Record:
    """One anchored study batch, as ``getRecord`` returns it."""

    patient: str
    index: int
    record_id: bytes
    merkle_root: bytes
    manifest_cid: str
    sealed_capsule: bytes
    sender: str
    anchored_at: int


@dataclass(frozen=True)
class AuditAnchor:
    """One anchored audit range, as ``getAuditAnchor`` returns it."""

    index: int
    root: bytes
    from_seq: int
    to_seq: int
    anchored_at: int


@dataclass(frozen=True)
class User:
    """A registered account."""

    account: str
    role: Role | None
    suspended: bool
    hpke_public_key: bytes


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event (the immutable audit trail)."""

    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: bytes
    log_index: int


def _plain(value: Any) -> Any:
    """HexBytes → bytes so events compare and serialise simply."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    return value


def _receipt(receipt: TxReceipt) -> AnchorReceipt:
    return AnchorReceipt(
        tx_hash=bytes(receipt["transactionHash"]),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
    )


class Ledger:
    """A deployed registry on a ``Chain``."""

    def __init__(self, chain: Chain, address: str, artifact: Artifact | None = None) -> None:
        self.chain = chain
        self.artifact = artifact or registry_artifact()
        self.address = checksum(address)
        self.contract: Contract = chain.w3.eth.contract(address=self.address, abi=self.artifact.abi)
        self.decoder = ErrorDecoder(self.artifact.abi)
        #: Block of the deployment, when known (set by ``deploy``); 0 otherwise.
        self.deploy_block = 0
        self._events_by_topic: dict[bytes, str] = {
            bytes(event_abi_to_log_topic(e)): str(e["name"])  # type: ignore[arg-type]
            for e in self.artifact.abi
            if e.get("type") == "event"
        }

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        deployer: LocalAccount,
        admin_hpke_public_key: bytes,
        *,
        admin: str | None = None,
        artifact: Artifact | None = None,
    ) -> Ledger:
        """Deploy the registry with ``admin`` (default: the deployer) as first ADMIN."""
        artifact = artifact or registry_artifact()
        factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        constructor = factory.constructor(
            checksum(admin or deployer.address), admin_hpke_public_key
        )

        def build(base: TxParams) -> TxParams:
            return _with_headroom(chain, constructor.build_transaction(base))

        receipt = chain.transact(deployer, build, decoder=ErrorDecoder(artifact.abi), what="deploy")
        address = receipt.get("contractAddress")
        if not address:
            raise LedgerConfigError("deployment mined without a contract address")
        ledger = cls(chain, address, artifact)
        ledger.deploy_block = int(receipt["blockNumber"])
        return ledger

    # -- transactions -----------------------------------------------------------------------

    def _send(self, account: LocalAccount, fn_name: str, *args: Any) -> AnchorReceipt:
        function = self.contract.functions[fn_name](*args)

        def build(base: TxParams) -> TxParams:
            return _with_headroom(self.chain, function.build_transaction(base))

        return _receipt(self.chain.transact(account, build, decoder=self.decoder, what=fn_name))

    def register_user(
        self, admin: LocalAccount, account: str, role: Role, hpke_public_key: bytes
    ) -> AnchorReceipt:
        """``addUser``: register ``account`` with ``role`` and its HPKE public key."""
        return self._send(admin, "addUser", checksum(account), role.role_id, hpke_public_key)

    def update_user_key(
        self, admin: LocalAccount, account: str, hpke_public_key: bytes
    ) -> AnchorReceipt:
        """``updateUserKey``: replace a user's HPKE key (lost-password recovery)."""
        return self._send(admin, "updateUserKey", checksum(account), hpke_public_key)

    def suspend_user(self, admin: LocalAccount, account: str) -> AnchorReceipt:
        """``suspendUser``."""
        return self._send(admin, "suspendUser", checksum(account))

    def reinstate_user(self, admin: LocalAccount, account: str) -> AnchorReceipt:
        """``reinstateUser``."""
        return self._send(admin, "reinstateUser", checksum(account))

    def anchor_study(
        self,
        sender: LocalAccount,
        patient: str,
        record_id: bytes,
        merkle_root: bytes,
        manifest_cid: str,
        sealed_capsule: bytes,
        *,
        study_id: bytes,
    ) -> AnchorReceipt:
        """``anchorRecord``: anchor one study batch for ``patient`` (never overwrites).

        ``patient`` must be the study's owner, or the custodian (a batch sealed before the
        study was transferred); anything else is ``StudyOwnerMismatch``.
        """
        return self._send(
            sender,
            "anchorRecord",
            checksum(patient),
            _bytes32(record_id),
            _bytes32(study_id),
            _bytes32(merkle_root),
            manifest_cid,
            sealed_capsule,
        )

    def designate_custodian(self, admin: LocalAccount, account: str) -> AnchorReceipt:
        """``designateCustodian``: name the custodian account, once for the registry's life."""
        return self._send(admin, "designateCustodian", checksum(account))

    def transfer_record(
        self, admin: LocalAccount, record_id: bytes, patient: str, sealed_capsule: bytes
    ) -> AnchorReceipt:
        """``transferRecord``: hand a custodian-owned record to ``patient`` with its capsule
        re-sealed to the patient (admin only; the record's study becomes the patient's)."""
        return self._send(
            admin, "transferRecord", _bytes32(record_id), checksum(patient), sealed_capsule
        )

    def grant_study(
        self, patient: LocalAccount, study_id: bytes, doctor: str, sealed_capsule: bytes
    ) -> AnchorReceipt:
        """``grant``: the study's owner lets ``doctor`` read every record of the study, later
        ones included, with a capsule sealed to the doctor."""
        return self._send(patient, "grant", _bytes32(study_id), checksum(doctor), sealed_capsule)

    def revoke_study(self, patient: LocalAccount, study_id: bytes, doctor: str) -> AnchorReceipt:
        """``revoke``: end ``doctor``'s grant on the study (forward-only)."""
        return self._send(patient, "revoke", _bytes32(study_id), checksum(doctor))

    def anchor_audit(
        self, sender: LocalAccount, root: bytes, from_seq: int, to_seq: int
    ) -> AnchorReceipt:
        """``anchorAudit``: anchor audit-log entries ``from_seq..to_seq``."""
        return self._send(sender, "anchorAudit", _bytes32(root), from_seq, to_seq)

    # -- views ------------------------------------------------------------------------------

    def _view(self, fn_name: str, *args: Any) -> Any:
        function = self.contract.functions[fn_name](*args)
        try:
            return self.chain.call_node(function.call, fn_name)
        except REVERTS as e:
            raise self.decoder.from_exception(e) from e

    def has_access(self, record_id: bytes, account: str) -> bool:
        """Whether ``account`` may read ``record_id``: the active owner of the record or of its
        study, or an active doctor with an unrevoked grant on its study."""
        return bool(self._view("hasAccess", _bytes32(record_id), checksum(account)))

    def has_study_access(self, study_id: bytes, account: str) -> bool:
        """Whether ``account`` may read the records of ``study_id`` (same rule)."""
        return bool(self._view("hasStudyAccess", _bytes32(study_id), checksum(account)))

    def study_owner(self, study_id: bytes) -> str | None:
        """The study's owner, or None if no record of it was anchored."""
        owner = str(self._view("studyOwner", _bytes32(study_id)))
        return None if int(owner, 16) == 0 else checksum(owner)

    def record_study(self, record_id: bytes) -> bytes | None:
        """The study id of a record, or None if it was never anchored."""
        try:
            return bytes(self._view("recordStudy", _bytes32(record_id)))
        except LedgerRevertError as e:
            if e.name == "UnknownRecord":
                return None
            raise

    def custodian(self) -> str | None:
        """The designated custodian account, or None before ``designate_custodian``."""
        found = str(self._view("custodian"))
        return None if int(found, 16) == 0 else checksum(found)

    def contract_version(self) -> int:
        """The deployed registry's interface version: ``VERSION()``, or 1 for the first
        registry (which had no such getter: its call reverts or returns nothing)."""
        probe = self.chain.w3.eth.contract(address=self.address, abi=_VERSION_ABI)
        try:
            return int(self.chain.call_node(probe.functions.VERSION().call, "VERSION"))
        except REVERTS:
            return 1
        except BadFunctionCallOutput:  # no code, or a node that returns empty data
            return 1

    def is_current(self) -> bool:
        """Whether the code at the address is exactly this build's registry (the committed
        artifact's runtime bytecode, whatever ABI this ``Ledger`` was built with), so every
        verb here is safe to call on it."""
        code = self.chain.call_node(lambda: self.chain.w3.eth.get_code(self.address), "getCode")
        return bytes(code) == _hexbytes(registry_artifact().deployed_bytecode)

    def user(self, account: str) -> User:
        """``getUser``; role None when unregistered."""
        role, suspended, key = self._view("getUser", checksum(account))
        return User(checksum(account), Role.from_id(bytes(role)), bool(suspended), bytes(key))

    def record_count(self, patient: str) -> int:
        """How many records ``patient`` owns."""
        return int(self._view("recordCount", checksum(patient)))

    def record(self, patient: str, index: int) -> Record:
        """``getRecord(patient, index)``."""
        rid, root, cid, capsule, sender, at = self._view("getRecord", checksum(patient), index)
        return Record(
            patient=checksum(patient),
            index=index,
            record_id=bytes(rid),
            merkle_root=bytes(root),
            manifest_cid=str(cid),
            sealed_capsule=bytes(capsule),
            sender=checksum(sender),
            anchored_at=int(at),
        )

    def records_of(self, patient: str) -> list[Record]:
        """Every record ``patient`` owns, oldest first."""
        return [self.record(patient, i) for i in range(self.record_count(patient))]

    def record_by_id(self, record_id: bytes) -> Record | None:
        """The record with ``record_id``, or None if it was never anchored."""
        try:
            owner, index = self._view("recordById", _bytes32(record_id))
        except LedgerRevertError as e:
            if e.name == "UnknownRecord":
                return None
            raise
        if int(str(owner), 16) == 0:
            return None
        return self.record(owner, int(index))

    def study_grant(self, study_id: bytes, doctor: str) -> tuple[bool, int, bytes]:
        """``getGrant``: (active, grantedAt, sealedCapsule) of ``doctor`` on the study."""
        active, at, capsule = self._view("getGrant", _bytes32(study_id), checksum(doctor))
        return bool(active), int(at), bytes(capsule)

    def last_audit_seq(self) -> int:
        """The last audit sequence number anchored (0 before the first batch)."""
        return int(self._view("lastAuditSeq"))

    def audit_anchor_count(self) -> int:
        """How many audit ranges are anchored."""
        return int(self._view("auditAnchorCount"))

    def audit_anchor(self, index: int) -> AuditAnchor:
        """Audit range ``index`` (0-based, oldest first)."""
        root, from_seq, to_seq, at = self._view("getAuditAnchor", index)
        return AuditAnchor(index, bytes(root), int(from_seq), int(to_seq), int(at))

    def audit_anchors(self) -> list[AuditAnchor]:
        """Every anchored audit range, oldest first."""
        return [self.audit_anchor(i) for i in range(self.audit_anchor_count())]

    def record_event(self, record_id: bytes) -> LedgerEvent | None:
        """The ``RecordAnchored`` event of ``record_id`` (found by its indexed topic), or None.

        Why: after a lost receipt the record is known to exist but not where; the event gives
        the transaction and block for the outbox row.
        """
        topic = next(t for t, n in self._events_by_topic.items() if n == "RecordAnchored")
        logs = self.chain.call_node(
            lambda: self.chain.w3.eth.get_logs(
                {
                    "address": self.address,
                    "fromBlock": 0,
                    "toBlock": "latest",
                    "topics": [topic, None, _bytes32(record_id)],  # type: ignore[list-item]
                }
            ),
            "eth_getLogs",
        )
        for log in logs:
            decoded = self.contract.events.RecordAnchored().process_log(log)
            return LedgerEvent(
                name="RecordAnchored",
                args={k: _plain(v) for k, v in decoded["args"].items()},
                block_number=int(log["blockNumber"]),
                tx_hash=bytes(log["transactionHash"]),
                log_index=int(log["logIndex"]),
            )
        return None

    def block_height(self) -> int:
        """The chain's latest block number."""
        return self.chain.block_height()

    def events_since(self, from_block: int, to_block: int | None = None) -> list[LedgerEvent]:
        """Every event of the registry in blocks ``from_block..to_block`` (default latest)."""
        end: int | str = "latest" if to_block is None else to_block
        logs = self.chain.call_node(
            lambda: self.chain.w3.eth.get_logs(
                {"address": self.address, "fromBlock": from_block, "toBlock": end}  # type: ignore[typeddict-item]
            ),
            "eth_getLogs",
        )
        out: list[LedgerEvent] = []
        for log in logs:
            if not log["topics"]:
                continue
            name = self._events_by_topic.get(bytes(log["topics"][0]))
            if name is None:
                continue
            decoded = self.contract.events[name]().process_log(log)
            out.append(
                LedgerEvent(
                    name=name,
                    args={k: _plain(v) for k, v in decoded["args"].items()},
                    block_number=int(log["blockNumber"]),
                    tx_hash=bytes(log["transactionHash"]),
                    log_index=int(log["logIndex"]),
                )
            )
        return out


def _hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _bytes32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return bytes(value)


def _with_headroom(chain: Chain, tx: TxParams) -> TxParams:
    """Pad the estimated gas (state can change before inclusion on a shared node)."""
    gas = int(tx.get("gas", 0))
    if gas:
        return {**tx, "gas": int(gas * GAS_HEADROOM)}
    return tx
