"""``ztbridge verify``: recompute everything from the store and check it against the chain.

For each anchored batch: the on-chain record (by record id) gives the Merkle root, the manifest
CID and the capsule; the capsule (opened with the custodian key) gives the manifest key; the
manifest (fetched by CID, every block checked) lists the instances; each instance is fetched by
CID, decrypted and hashed; the leaves rebuilt from what was actually fetched must give the
anchored root. The index is checked against the anchored manifest, and anchored audit ranges
against the audit log. Every disagreement is reported with the study and instance it concerns
(the report never stops at the first problem): the point is to name the culprit.

Trust: the chain is the reference. The index and the store are what is being checked; the
custodian key and the chain are assumed intact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, select

from gateway import crypto
from gateway.anchoring.manifest import (
    Capsule,
    Manifest,
    ManifestEntry,
    capsule_info,
    leaf_bytes,
    manifest_key_info,
)
from gateway.anchoring.outbox import ANCHORED, audit_root
from gateway.audit import AuditEntry, entry_hash, verify_chain
from gateway.errors import (
    IntegrityError,
    InvalidEnvelopeError,
    NotFoundError,
    RetrieveError,
    StorageError,
    ZtbridgeError,
)
from gateway.index.models import (
    anchor_batch_members,
    anchor_batches,
    audit_anchors,
    instances,
)
from gateway.ledger.errors import LedgerError
from gateway.merkle import merkle_root
from gateway.retrieve import CustodianKeys, InstanceRef, open_object, retrieve
from gateway.service import Gateway
from gateway.validation import is_valid_uid

if TYPE_CHECKING:
    from gateway.anchoring.session import Session
    from gateway.ledger.ledger import Ledger


@dataclass(frozen=True)
class Problem:
    """One mismatch, named as precisely as the evidence allows."""

    what: str
    study_uid: str | None = None
    instance: str | None = None

    def __str__(self) -> str:
        where = []
        if self.study_uid:
            where.append(f"study {self.study_uid}")
        if self.instance:
            where.append(f"instance {self.instance}")
        return (" ".join(where) + ": " if where else "") + self.what


@dataclass
class Report:
    """What verify found: problems (exit non-zero) and notes (not yet provable, no fault)."""

    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    batches: int = 0
    instances: int = 0
    audit_ranges: int = 0


#: Gives the ledger a batch or audit range was anchored on, by deployment id.
LedgerFor = Callable[[int], "Ledger"]


def _label(sop: str, version: int) -> str:
    return sop if version == 1 else f"{sop} (version {version})"


class Verifier:
    """Runs the checks; ``ledger_for`` opens the chain a deployment lives on."""

    def __init__(
        self,
        gw: Gateway,
        custodian: crypto.KeyPair,
        ledger_for: LedgerFor,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.gw = gw
        self.pair = custodian
        self.ledger_for = ledger_for
        self.progress = progress or (lambda: None)
        self.report = Report()

    def problem(self, what: str, study: str | None = None, instance: str | None = None) -> None:
        self.report.problems.append(Problem(what, study, instance))

    # -- studies ----------------------------------------------------------------------------

    def batches(self, study_uid: str | None) -> list[Any]:
        """Batch rows to check (one study, or all)."""
        query = select(anchor_batches).order_by(anchor_batches.c.id)
        if study_uid is not None:
            query = query.where(anchor_batches.c.study_uid == study_uid)
        with self.gw.db.read() as conn:
            return list(conn.execute(query).all())

    def unbatched(self, study_uid: str | None) -> int:
        """Instances not yet in any batch."""
        query = select(instances.c.id).where(
            ~exists().where(anchor_batch_members.c.instance_id == instances.c.id)
        )
        if study_uid is not None:
            query = query.where(instances.c.study_uid == study_uid)
        with self.gw.db.read() as conn:
            return len(conn.execute(query).all())

    def check_studies(self, study_uid: str | None) -> None:
        if study_uid is not None:
            if not is_valid_uid(study_uid):
                raise NotFoundError(f"{study_uid!r} is not a valid Study Instance UID")
            with self.gw.db.read() as conn:
                known = conn.execute(
                    select(instances.c.id).where(instances.c.study_uid == study_uid).limit(1)
                ).first()
            if known is None:
                raise NotFoundError(f"no study {study_uid} in the index")
        pending = 0
        for row in self.batches(study_uid):
            if row.state == ANCHORED:
                self.check_batch(row)
            elif row.state == "conflict":
                self.problem(
                    f"batch {row.batch_no} conflicts with the chain: {row.last_error}",
                    row.study_uid,
                )
            else:
                pending += 1
        unbatched = self.unbatched(study_uid)
        if pending:
            self.report.notes.append(f"{pending} batch(es) sealed but not anchored yet")
        if unbatched:
            self.report.notes.append(f"{unbatched} instance(s) not yet sealed into a batch")

    def _members(self, batch_id: int) -> dict[tuple[str, int], Any]:
        with self.gw.db.read() as conn:
            rows = conn.execute(
                select(instances)
                .join(anchor_batch_members, anchor_batch_members.c.instance_id == instances.c.id)
                .where(anchor_batch_members.c.batch_id == batch_id)
            ).all()
        return {(r.sop_instance_uid, r.version): r for r in rows}

    def check_batch(self, row: Any) -> None:
        """Everything about one anchored batch."""
        study = row.study_uid
        self.report.batches += 1
        record_id = bytes.fromhex(row.record_id)
        name = f"batch {row.batch_no} (record {row.record_id[:12]}…)"
        try:
            ledger = self.ledger_for(row.deployment_id)
            record = ledger.record_by_id(record_id)
        except (LedgerError, ZtbridgeError) as e:
            self.problem(f"{name}: cannot read the chain: {e}", study)
            return
        if record is None:
            self.problem(f"{name} is marked anchored but the chain has no such record", study)
            return
        root = record.merkle_root
        if root.hex() != row.merkle_root:
            self.problem(f"{name}: the index's Merkle root differs from the on-chain one", study)
        if record.manifest_cid != row.manifest_cid:
            self.problem(f"{name}: the index's manifest CID differs from the on-chain one", study)
        keys = CustodianKeys(self.gw.db, self.pair)
        manifest = self._manifest(row, record, keys, name)
        members = self._members(row.id)
        if manifest is None:
            # No trustworthy list: still check every member against the index's own hashes.
            for (sop, version), inst in members.items():
                self._check_object(study, _label(sop, version), _entry_of(inst), keys)
            return
        if manifest.root != root:
            self.problem(
                f"{name}: the manifest does not give the anchored Merkle root (manifest altered)",
                study,
            )
        before = len(self.report.problems)
        actual: list[bytes] = []
        seen: set[tuple[str, int]] = set()
        for entry in manifest.entries:
            label = _label(entry.sop_instance, entry.version)
            seen.add((entry.sop_instance, entry.version))
            leaf = self._check_object(study, label, entry, keys)
            actual.append(leaf if leaf is not None else b"")
            inst = members.get((entry.sop_instance, entry.version))
            if inst is None:
                self.problem(
                    f"in the anchored manifest of {name} but not in the index", study, label
                )
            else:
                self._compare_index(study, label, entry, inst)
        for sop, version in sorted(set(members) - seen):
            self.problem(
                f"the index puts it in {name} but the anchored manifest does not list it",
                study,
                _label(sop, version),
            )
        if actual and merkle_root(actual) != root and len(self.report.problems) == before:
            self.problem(f"{name}: the stored instances do not rebuild the anchored root", study)

    def _manifest(self, row: Any, record: Any, keys: CustodianKeys, name: str) -> Manifest | None:
        study = row.study_uid
        manifest_key: bytes | None = None
        try:
            capsule = Capsule.from_bytes(
                crypto.unwrap(self.pair, record.sealed_capsule, capsule_info(record.record_id))
            )
            manifest_key = capsule.manifest_key
            for key_id, key in capsule.open_study_keys(self.pair):
                keys.add(key_id.hex(), key)
            if capsule.manifest_cid != record.manifest_cid:
                self.problem(f"{name}: the on-chain capsule names another manifest", study)
        except (InvalidEnvelopeError, IntegrityError):
            # Sealed to a patient (not openable here) or damaged: use the custodian's wrap.
            try:
                manifest_key = crypto.unwrap(
                    self.pair,
                    bytes(row.manifest_key_wrap),
                    manifest_key_info(row.manifest_key_id),
                )
            except InvalidEnvelopeError:
                self.problem(f"{name}: neither the capsule nor the index opens the manifest", study)
                return None
        cid = record.manifest_cid
        try:
            plain = open_object(self.gw.store, cid, manifest_key)
        except NotFoundError as e:
            self.problem(f"{name}: manifest: stored object {cid} is missing ({e})", study)
            return None
        except IntegrityError as e:
            self.problem(f"{name}: manifest: stored object {cid} is damaged: {e}", study)
            return None
        except StorageError as e:
            self.problem(f"{name}: manifest: stored object {cid} cannot be read: {e}", study)
            return None
        except InvalidEnvelopeError:
            self.problem(f"{name}: manifest {cid} fails authentication", study)
            return None
        try:
            manifest = Manifest.from_bytes(plain)
        except IntegrityError as e:
            self.problem(f"{name}: manifest {cid}: {e}", study)
            return None
        if manifest.record_id != record.record_id or manifest.study_uid != study:
            self.problem(f"{name}: the manifest belongs to another record or study", study)
        for wrap in manifest.key_wraps:
            keys.add_wrap(wrap.key_id, wrap.wrap)
        return manifest

    def _check_object(
        self, study: str, label: str, entry: ManifestEntry, keys: CustodianKeys
    ) -> bytes | None:
        """Read one instance through ``retrieve`` against the manifest's record of it; its
        actual leaf bytes (None if it could not be read whole)."""
        self.report.instances += 1
        self.progress()
        ref = InstanceRef(
            entry.sop_instance,
            entry.version,
            entry.cid,
            entry.key_id,
            entry.sha256.hex(),
            entry.size,
        )
        reading = retrieve(ref, self.gw.store, keys)
        seen = reading.observed
        try:
            for _ in reading:
                pass
        except RetrieveError as e:
            if e.kind == "key":
                self.problem(f"study key {entry.key_id} cannot be recovered", study, label)
            elif e.kind == "size":
                self.problem(
                    f"decrypted size {seen.size} differs from the manifest's {entry.size}",
                    study,
                    label,
                )
            elif e.kind == "hash":
                self.problem(
                    "SHA-256 of the decrypted data set differs from the manifest", study, label
                )
            else:
                self.problem(e.what, study, label)
            return None
        if (seen.sop_class or "") != entry.sop_class:
            self.problem("SOP Class differs from the manifest", study, label)
        return leaf_bytes(
            ManifestEntry(
                entry.cid,
                bytes.fromhex(seen.sha256 or ""),
                seen.size,
                seen.sop_class or "",
                entry.sop_instance,
                entry.version,
                entry.key_id,
            )
        )

    def _compare_index(self, study: str, label: str, entry: ManifestEntry, inst: Any) -> None:
        fields = [
            ("CID", inst.cid, entry.cid),
            ("SHA-256", inst.sha256, entry.sha256.hex()),
            ("size", int(inst.size), entry.size),
            ("SOP Class", inst.sop_class_uid, entry.sop_class),
            ("key id", inst.key_id, entry.key_id),
        ]
        differ = [name for name, mine, anchored in fields if mine != anchored]
        if differ:
            self.problem(
                "index row differs from the anchored manifest (" + ", ".join(differ) + ")",
                study,
                label,
            )

    # -- chain-side completeness and audit ranges -------------------------------------------

    def check_chain_records(self, session: Session) -> None:
        """Every record the chain holds for the custodian must be a batch of ours."""
        assert self.gw.accounts is not None
        with self.gw.db.read() as conn:
            known = {r.record_id for r in conn.execute(select(anchor_batches.c.record_id))}
        try:
            records = session.ledger.records_of(self.gw.accounts.custodian_address)
        except LedgerError as e:
            self.problem(f"cannot list the chain's records: {e}")
            return
        for rec in records:
            if rec.record_id.hex() not in known:
                self.problem(
                    f"on-chain record {rec.record_id.hex()[:12]}… (#{rec.index}) has no batch in"
                    " the index (batch rows deleted?)"
                )

    def check_audit(self, session: Session) -> None:
        """Anchored audit ranges against the log, and the log's own hash chain."""
        entries = list(self.gw.audit.entries())
        by_seq = {e.seq: e for e in entries}
        problem = verify_chain(entries, self.gw.audit.head())
        if problem is not None:
            self.problem(f"audit entry {problem.seq}: {problem.problem}")
        try:
            anchors = session.ledger.audit_anchors()
        except LedgerError as e:
            self.problem(f"cannot read the chain's audit anchors: {e}")
            return
        for anchor in anchors:
            self.report.audit_ranges += 1
            span = f"audit entries {anchor.from_seq}..{anchor.to_seq}"
            # Each entry's hash recomputed from its fields (not the stored column), so an
            # edited entry changes the root whether or not its hash was "fixed" too.
            hashes = [
                _recomputed(by_seq[s]) for s in _seqs(anchor.from_seq, anchor.to_seq) if s in by_seq
            ]
            if len(hashes) != anchor.to_seq - anchor.from_seq + 1:
                self.problem(f"{span}: anchored on-chain but entries are missing from the log")
                continue
            if audit_root(hashes) != anchor.root:
                self.problem(
                    f"{span}: the log no longer gives the root anchored on-chain"
                    f" (anchor #{anchor.index}); an entry in this range was changed"
                )
        with self.gw.db.read() as conn:
            mine = conn.execute(
                select(audit_anchors).where(
                    audit_anchors.c.deployment_id == session.deployment.id,
                    audit_anchors.c.state == ANCHORED,
                )
            ).all()
        on_chain = {(a.from_seq, a.to_seq, a.root.hex()) for a in anchors}
        for row in mine:
            if (row.from_seq, row.to_seq, row.root) not in on_chain:
                self.problem(
                    f"audit entries {row.from_seq}..{row.to_seq}: marked anchored in the index"
                    " but not on the chain"
                )
        last = anchors[-1].to_seq if anchors else 0
        head = self.gw.audit.head()
        if head and head[0] > last:
            self.report.notes.append(f"audit entries {last + 1}..{head[0]} not anchored yet")


def _recomputed(e: AuditEntry) -> str:
    return entry_hash(e.seq, e.ts, e.kind, e.actor, e.subject, e.outcome, e.detail, e.prev_hash)


def _seqs(lo: int, hi: int) -> Iterator[int]:
    return iter(range(lo, hi + 1))


def _entry_of(inst: Any) -> ManifestEntry:
    return ManifestEntry(
        inst.cid,
        bytes.fromhex(inst.sha256),
        int(inst.size),
        inst.sop_class_uid,
        inst.sop_instance_uid,
        int(inst.version),
        inst.key_id,
    )
