"""The gateway side of posture: enrollment keys, receiving reports, the current verdict.

A report becomes a device's current posture only if it verifies with the device's key, is
fresh (not older than the policy allows, not ahead of our clock by more than the skew we
accept) and its nonce was never seen; it is then judged by the device's policy and stored
with the verdict, in the same transaction as its audit event. Anything else is refused with
a ``ReportRefusedError`` naming the problem, audited, and remembered on the device so an
admission refusal can explain why there is no fresh report. A refused report never replaces
the current one: anyone can post garbage in a device's name, and that must not lock the
device out.

Nonces are kept for as long as a report could still pass the freshness check (the longest
max report age of any policy plus the accepted clock skew), so a replay is always caught.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Connection, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from gateway import crypto
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.devices import Device, DeviceRegistry
from gateway.durable import write_new_file
from gateway.errors import ConfigError, InvalidInputError, StorageError
from gateway.index.database import Database
from gateway.index.models import device_posture, posture_nonces, posture_reports
from gateway.logsafe import shown
from gateway.posture.policy import NO_POLICY, Decision, PolicySet, evaluate
from gateway.posture.refusals import RefusalTally
from gateway.posture.report import (
    Envelope,
    Report,
    canonical_json,
    parse_envelope,
    parse_report,
    signature_valid,
)
from gateway.posture.status import PostureStatus
from gateway.settings import PostureSettings

log = logging.getLogger("ztbridge.posture")

# Longest any policy may allow a report to be (7 days) plus the largest future skew (1 h):
# how long a nonce is remembered, whatever today's policies say.
NONCE_RETENTION = timedelta(days=7, hours=1)
UNREGISTERED = "(unregistered)"  # refusals for AE titles no device has are counted under this


class Problem(StrEnum):
    """Why a posted report was refused (each maps to one RFC 9457 problem type)."""

    MALFORMED = "malformed-report"
    TOO_LARGE = "report-too-large"
    UNKNOWN_DEVICE = "unknown-device"
    NOT_ENROLLED = "posture-not-enrolled"
    BAD_SIGNATURE = "bad-signature"
    WRONG_DEVICE = "wrong-device"
    STALE = "stale-report"
    FUTURE = "report-from-the-future"
    REPLAYED = "replayed-report"


class ReportRefusedError(InvalidInputError):
    """A posted report that does not become the device's posture, and why."""

    def __init__(self, problem: Problem, reason: str) -> None:
        super().__init__(reason)
        self.problem = problem
        self.reason = reason


@dataclass(frozen=True)
class Accepted:
    """A stored report and its verdict."""

    device: str
    policy: str
    decision: Decision
    issued_at: datetime
    received_at: datetime


@dataclass(frozen=True)
class PostureFailure:
    """Published when a device's accepted report fails its policy."""

    device_id: int
    ae_title: str
    policy: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Enrollment:
    """A device's posture configuration, for display."""

    policy: str
    key_fingerprint: str | None
    enrolled_at: str
    last_refused_at: str | None
    last_refused: str | None


@dataclass(frozen=True)
class StoredReport:
    """The current (newest accepted) report of a device, for display."""

    issued_at: datetime
    received_at: str
    policy: str
    passed: bool
    reasons: tuple[str, ...]
    notes: tuple[str, ...]
    report: dict[str, Any]


def fingerprint(public: bytes) -> str:
    """A short, stable name for a public key: SHA-256, first 16 hex digits, in pairs."""
    digest = hashlib.sha256(public).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def write_key_file(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 and the key, durably; never overwrite an existing file."""
    write_new_file(path, pem)


def check_key_destination(path: Path) -> None:
    """Refuse early (before anything is registered) a key path that cannot be created."""
    if path.exists() or path.is_symlink():
        raise InvalidInputError(
            f"{path} already exists: refusing to overwrite a key file (choose another path)"
        )
    if not path.parent.is_dir():
        raise InvalidInputError(f"folder {path.parent} does not exist (for {path})")


def _ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class PostureService:
    """Posture enrollment, report intake and the per-device verdict."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        clock: Clock,
        devices: DeviceRegistry,
        policies: PolicySet,
        settings: PostureSettings,
    ) -> None:
        self._db = db
        self._audit = audit
        self._clock = clock
        self._devices = devices
        self.policies = policies
        self._settings = settings
        self._listeners: list[Callable[[PostureFailure], None]] = []
        self._listeners_lock = threading.Lock()
        self._tally = RefusalTally(timedelta(seconds=settings.refusal_summary_seconds))
        # device id -> (when, why) of the latest refusal of an unauthenticated post in its name
        self._unverified_refusals: dict[int, tuple[datetime, str]] = {}

    # --- enrollment --------------------------------------------------------------------

    def _configure(
        self,
        conn: Connection,
        device_id: int,
        subject: str,
        policy: str,
        key_out: Path | None,
        actor: str,
    ) -> str | None:
        """Upsert the device's posture row; with ``key_out``, a new key (file written here,
        inside the caller's transaction, so a failed write registers nothing)."""
        public: str | None = None
        fp = None
        if key_out is not None:
            key = crypto.generate_signing_key()
            write_key_file(key_out, crypto.signing_key_pem(key))
            public = base64.b64encode(key.public).decode()
            fp = fingerprint(key.public)
        now = self._clock.now().isoformat()
        existing = conn.execute(
            select(device_posture.c.policy, device_posture.c.public_key).where(
                device_posture.c.device_id == device_id
            )
        ).first()
        detail: dict[str, Any] = {"policy": policy, **({"new_key": fp} if fp else {})}
        if existing is None:
            conn.execute(
                insert(device_posture).values(
                    device_id=device_id, policy=policy, public_key=public, enrolled_at=now
                )
            )
        else:
            values: dict[str, Any] = {"policy": policy}
            if public is not None:
                # The old key stops verifying at once, and so does what it signed: its reports
                # go (a new key cannot be replayed an old key's reports: they do not verify).
                values.update(public_key=public, enrolled_at=now)
                removed = conn.execute(
                    delete(posture_reports).where(posture_reports.c.device_id == device_id)
                ).rowcount
                detail["old_key_reports_removed"] = int(removed)
            elif policy != existing.policy:
                verdict = self._rejudge(conn, device_id, policy)
                if verdict is not None:
                    detail["rejudged"] = verdict
            conn.execute(
                update(device_posture)
                .where(device_posture.c.device_id == device_id)
                .values(**values)
            )
        self._audit.append(conn, AuditEvent("device.posture", actor, subject, "ok", detail))
        return fp

    def _rejudge(self, conn: Connection, device_id: int, policy_name: str) -> str | None:
        """The device's newest report, judged again under ``policy_name`` (as of when it was
        received) and relabelled: a policy change takes effect at once, without waiting for
        the agent's next report. Returns the new verdict, None if there is nothing to judge."""
        policy = self.policies.get(policy_name)
        if policy is None:  # 'none': nothing to judge
            return None
        row = conn.execute(
            select(posture_reports.c.id, posture_reports.c.report, posture_reports.c.received_at)
            .where(posture_reports.c.device_id == device_id)
            .order_by(posture_reports.c.issued_ms.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        try:
            report = parse_report(json.loads(row.report))
        except (ValueError, InvalidInputError):  # stored by an older version: not re-judged
            return None
        decision = evaluate(report, policy, datetime.fromisoformat(row.received_at))
        conn.execute(
            update(posture_reports)
            .where(posture_reports.c.id == row.id)
            .values(
                policy=policy_name,
                passed=decision.passed,
                reasons=list(decision.reasons),
                notes=list(decision.notes),
            )
        )
        return "pass" if decision.passed else "fail"

    def _check_choice(self, policy: str, key_out: Path | None, has_key: bool) -> None:
        self.policies.require(policy)
        if policy != NO_POLICY and key_out is None and not has_key:
            raise InvalidInputError(
                f"posture policy {policy!r} needs the device's posture key: give"
                " --posture-key-out FILE (the agent signs with it), or --posture-policy none"
                " for a device that cannot run the agent"
            )
        if key_out is not None:
            check_key_destination(key_out)

    def add_device(
        self,
        ae_title: str,
        networks: list[str],
        name: str,
        actor: str,
        policy: str,
        key_out: Path | None,
    ) -> tuple[Device, str | None]:
        """Register a device with its posture policy and, unless ``none``, a new key pair.

        The private key goes to ``key_out`` (0600, never overwritten); only the public key
        is kept. Returns the device and the key's fingerprint.
        """
        if policy == NO_POLICY and key_out is not None:
            raise InvalidInputError("--posture-key-out makes no sense with --posture-policy none")
        self._check_choice(policy, key_out, has_key=False)
        fp: list[str | None] = [None]

        def enroll(conn: Connection, device_id: int) -> None:
            fp[0] = self._configure(conn, device_id, ae_title.strip(), policy, key_out, actor)

        try:
            device = self._devices.add(ae_title, networks, name, actor, also=enroll)
        except BaseException:
            if key_out is not None and fp[0] is not None:
                key_out.unlink(missing_ok=True)  # written, then the transaction failed
            raise
        return device, fp[0]

    def reconfigure(
        self, ref: str, actor: str, policy: str | None, key_out: Path | None
    ) -> tuple[Device, str, str | None]:
        """Change a device's policy and/or give it a new key; returns (device, policy, fp)."""
        device = self._devices.find(ref)
        current = self.enrollment(device.id)
        new_policy = policy or (current.policy if current else self._settings.default_policy)
        has_key = current is not None and current.key_fingerprint is not None
        self._check_choice(new_policy, key_out, has_key)
        fp: str | None = None
        try:
            with self._db.write() as conn:
                fp = self._configure(conn, device.id, device.ae_title, new_policy, key_out, actor)
        except BaseException:
            if key_out is not None and fp is not None:
                key_out.unlink(missing_ok=True)
            raise
        return device, new_policy, fp

    def enrollment(self, device_id: int) -> Enrollment | None:
        """The device's posture configuration, or None if it was never enrolled."""
        with self._db.read() as conn:
            row = conn.execute(
                select(device_posture).where(device_posture.c.device_id == device_id)
            ).first()
        if row is None:
            return None
        public = row.public_key
        return Enrollment(
            policy=row.policy,
            key_fingerprint=fingerprint(base64.b64decode(public)) if public else None,
            enrolled_at=row.enrolled_at,
            last_refused_at=row.last_refused_at,
            last_refused=row.last_refused,
        )

    def policies_by_device(self) -> dict[int, str]:
        """device id -> policy name, for listings."""
        with self._db.read() as conn:
            return {
                r.device_id: r.policy
                for r in conn.execute(select(device_posture.c.device_id, device_posture.c.policy))
            }

    # --- the verdict, for admission and display ---------------------------------------

    def status(self, device_id: int) -> PostureStatus | None:
        """The device's posture snapshot (one query); None if it was never enrolled.

        Only a report judged under the device's current policy counts (a verdict under the
        policy it had before proves nothing about the one it has now); reports signed with a
        key the device no longer has are deleted when the key is replaced.
        """
        current = and_(
            posture_reports.c.device_id == device_posture.c.device_id,
            posture_reports.c.policy == device_posture.c.policy,
        )
        with self._db.read() as conn:
            row = conn.execute(
                select(
                    device_posture.c.policy,
                    device_posture.c.last_refused_at,
                    device_posture.c.last_refused,
                    posture_reports.c.issued_ms,
                    posture_reports.c.received_at,
                    posture_reports.c.passed,
                    posture_reports.c.reasons,
                )
                .select_from(device_posture.outerjoin(posture_reports, current))
                .where(device_posture.c.device_id == device_id)
                .order_by(posture_reports.c.issued_ms.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        policy = self.policies.get(row.policy)
        refused_at = datetime.fromisoformat(row.last_refused_at) if row.last_refused_at else None
        refused = row.last_refused
        unverified = self._unverified_refusals.get(device_id)
        if unverified is not None and (refused_at is None or unverified[0] > refused_at):
            refused_at, refused = unverified[0], f"unauthenticated post, {unverified[1]}"
        issued_at = None
        if row.issued_ms is not None:
            # A report dated ahead of our clock (up to posture.max_future_seconds is accepted)
            # ages from when it arrived, not from its date: it must not stay fresh for longer.
            issued_at = min(_from_ms(row.issued_ms), datetime.fromisoformat(row.received_at))
        return PostureStatus(
            policy=row.policy,
            max_report_age=policy.max_report_age if policy else None,
            issued_at=issued_at,
            passed=bool(row.passed) if row.passed is not None else None,
            reasons=tuple(row.reasons or ()),
            last_refused_at=refused_at,
            last_refused=refused,
        )

    def latest(self, device_id: int) -> StoredReport | None:
        """The device's current report (judged under its current policy), if any."""
        with self._db.read() as conn:
            row = conn.execute(
                select(posture_reports)
                .join(
                    device_posture,
                    and_(
                        device_posture.c.device_id == posture_reports.c.device_id,
                        device_posture.c.policy == posture_reports.c.policy,
                    ),
                )
                .where(posture_reports.c.device_id == device_id)
                .order_by(posture_reports.c.issued_ms.desc())
                .limit(1)
            ).first()
        if row is None:
            return None
        return StoredReport(
            issued_at=_from_ms(row.issued_ms),
            received_at=row.received_at,
            policy=row.policy,
            passed=bool(row.passed),
            reasons=tuple(row.reasons),
            notes=tuple(row.notes),
            report=json.loads(row.report),
        )

    # --- failure notifications ------------------------------------------------------------

    def on_failure(self, listener: Callable[[PostureFailure], None]) -> None:
        """Call ``listener`` whenever an accepted report fails its policy (e.g. the DICOM
        edge aborting the device's open associations). Listeners run on the thread that
        received the report, after its transaction committed."""
        with self._listeners_lock:
            self._listeners.append(listener)

    def _publish(self, failure: PostureFailure) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(failure)
            except Exception:
                log.exception("posture failure listener %r failed", listener)

    # --- intake ----------------------------------------------------------------------------

    def receive(self, ae_title: str, body: bytes, peer: str) -> Accepted:
        """Verify, check freshness and replay, judge and store one posted report."""
        now = self._clock.now()
        self.flush_refusals(now)
        if len(body) > self._settings.max_report_kb * 1024:
            self._refuse_unverified(now, None, ae_title, peer, Problem.TOO_LARGE, self._too_large())
        device = self._devices.by_ae(ae_title)
        if device is None:
            self._refuse_unverified(
                now,
                None,
                ae_title,
                peer,
                Problem.UNKNOWN_DEVICE,
                f"no device with AE title {ae_title!r} is registered",
            )
        with self._db.read() as conn:
            enrolled = conn.execute(
                select(device_posture.c.policy, device_posture.c.public_key).where(
                    device_posture.c.device_id == device.id
                )
            ).first()
        if enrolled is None or enrolled.policy == NO_POLICY or not enrolled.public_key:
            self._refuse_unverified(
                now,
                device,
                device.ae_title,
                peer,
                Problem.NOT_ENROLLED,
                f"device {device.ae_title!r} has no posture key"
                + (" (its posture policy is 'none')" if enrolled is not None else "")
                + ": 'ztbridge device posture' gives it a policy and a key",
            )
        envelope, report = self._verified(now, device, peer, body, enrolled.public_key)

        def refuse(problem: Problem, reason: str) -> NoReturn:
            assert device is not None
            self._refuse_verified(now, device, peer, problem, reason)

        actor = f"{device.ae_title}@{peer}"
        policy = self.policies.get(enrolled.policy)
        if policy is None:
            reason = (
                f"device {device.ae_title!r} is enrolled under posture policy"
                f" {enrolled.policy!r}, which {self.policies.source} does not define"
            )
            log.error("posture report from %s not judged: %s", actor, reason)
            raise ConfigError(reason)
        age = now - report.issued
        if age > policy.max_report_age:
            refuse(
                Problem.STALE,
                f"the report was issued {int(age.total_seconds())} s ago; policy"
                f" {enrolled.policy!r} accepts at most {policy.max_report_age_seconds} s",
            )
        if -age > timedelta(seconds=self._settings.max_future_seconds):
            refuse(
                Problem.FUTURE,
                f"the report is dated {int(-age.total_seconds())} s ahead of the gateway's"
                f" clock (at most {self._settings.max_future_seconds} s accepted): fix the"
                " host's clock (NTP)",
            )
        decision = evaluate(report, policy, now)
        try:
            self._store(
                device, actor, enrolled.policy, enrolled.public_key, report, envelope, decision, now
            )
        except _ReplayedError:
            refuse(
                Problem.REPLAYED,
                f"a report with nonce {report.nonce} was already received from"
                f" {device.ae_title!r}: replayed",
            )
        except _KeyChangedError:
            self._refuse_unverified(
                now,
                device,
                device.ae_title,
                peer,
                Problem.BAD_SIGNATURE,
                f"device {device.ae_title!r} was given a new posture key while the report was"
                " being checked; it was signed with the old one",
            )
        if decision.passed:
            log.info("posture report from %s: pass (policy %s)", actor, enrolled.policy)
        else:
            log.warning(
                "posture report from %s: FAIL (policy %s): %s",
                actor,
                enrolled.policy,
                "; ".join(decision.reasons),
            )
            self._publish(
                PostureFailure(device.id, device.ae_title, enrolled.policy, decision.reasons)
            )
        return Accepted(device.ae_title, enrolled.policy, decision, report.issued, now)

    def _verified(
        self, now: datetime, device: Device, peer: str, body: bytes, public_b64: str
    ) -> tuple[Envelope, Report]:
        """The posted report, once its signature verifies with the device's key and its
        fields are well formed and name this device.

        Signature first: until it verifies, the body is anyone's, so a refusal names no more
        than "malformed" or "bad signature" and is only counted (``_refuse_unverified``); a
        report that cannot even be encoded canonically cannot carry a valid signature."""
        try:
            envelope = parse_envelope(body)
        except InvalidInputError as e:
            self._refuse_unverified(now, device, device.ae_title, peer, Problem.MALFORMED, str(e))
        if not signature_valid(envelope.report, envelope.signature, base64.b64decode(public_b64)):
            self._refuse_unverified(
                now,
                device,
                device.ae_title,
                peer,
                Problem.BAD_SIGNATURE,
                f"the signature does not verify with device {device.ae_title!r}'s registered"
                " posture key",
            )
        try:
            report = parse_report(envelope.report)
        except InvalidInputError as e:
            self._refuse_verified(now, device, peer, Problem.MALFORMED, str(e))
        if report.device != device.ae_title:
            self._refuse_verified(
                now,
                device,
                peer,
                Problem.WRONG_DEVICE,
                f"the report is for device {report.device!r}, posted to {device.ae_title!r}",
            )
        return envelope, report

    def _too_large(self) -> str:
        return f"the report is larger than {self._settings.max_report_kb} KiB"

    def _retention(self) -> timedelta:
        return self.policies.longest_report_age + timedelta(
            seconds=self._settings.max_future_seconds
        )

    def _store(
        self,
        device: Device,
        actor: str,
        policy: str,
        public_key: str,
        report: Report,
        envelope: Envelope,
        decision: Decision,
        now: datetime,
    ) -> None:
        try:
            with self._db.write() as conn:
                # Under the write lock: the key the report verified with must still be the
                # device's (a rotation committed meanwhile makes it an old key's report).
                current = conn.execute(
                    select(device_posture.c.public_key).where(
                        device_posture.c.device_id == device.id
                    )
                ).first()
                if current is None or current.public_key != public_key:
                    raise _KeyChangedError()
                seen = (
                    conn.execute(
                        select(posture_nonces.c.nonce).where(
                            posture_nonces.c.device_id == device.id,
                            posture_nonces.c.nonce == report.nonce,
                        )
                    ).first()
                    or conn.execute(
                        select(posture_reports.c.id).where(
                            posture_reports.c.device_id == device.id,
                            posture_reports.c.nonce == report.nonce,
                        )
                    ).first()
                )
                if seen is not None:
                    raise _ReplayedError()
                conn.execute(
                    insert(posture_nonces).values(
                        device_id=device.id, nonce=report.nonce, issued_ms=_ms(report.issued)
                    )
                )
                conn.execute(
                    insert(posture_reports).values(
                        device_id=device.id,
                        nonce=report.nonce,
                        issued_ms=_ms(report.issued),
                        received_at=now.isoformat(),
                        policy=policy,
                        passed=decision.passed,
                        reasons=list(decision.reasons),
                        notes=list(decision.notes),
                        report=canonical_json(envelope.report).decode(),
                        signature=envelope.signature,
                    )
                )
                conn.execute(
                    delete(posture_reports).where(
                        posture_reports.c.device_id == device.id,
                        posture_reports.c.issued_ms < _ms(now - self._retention()),
                    )
                )
                conn.execute(
                    delete(posture_nonces).where(
                        posture_nonces.c.device_id == device.id,
                        posture_nonces.c.issued_ms < _ms(now - NONCE_RETENTION),
                    )
                )
                self._audit.append(
                    conn,
                    AuditEvent(
                        "posture.accepted",
                        actor,
                        device.ae_title,
                        "ok" if decision.passed else "refused",
                        {
                            "policy": policy,
                            "verdict": "pass" if decision.passed else "fail",
                            "reasons": list(decision.reasons),
                            "issued_at": report.issued_at,
                            "nonce": report.nonce,
                        },
                    ),
                )
        except StorageError as e:
            if isinstance(e.__cause__, SAIntegrityError):  # the same nonce, concurrently
                raise _ReplayedError() from e
            raise

    # --- refusals ----------------------------------------------------------------------------

    def _refuse_unverified(
        self,
        now: datetime,
        device: Device | None,
        subject: str,
        peer: str,
        problem: Problem,
        reason: str,
    ) -> NoReturn:
        """Refuse a post nothing proves came from the device: anyone can make these, so they
        are counted in memory (the first of each kind per window logged), never written."""
        name = device.ae_title if device is not None else UNREGISTERED
        if self._tally.note(now, name, problem.value, peer):
            log.warning(
                "posture report for %s@%s refused (%s): %s",
                shown(subject),
                peer,
                problem.value,
                reason,
            )
        if device is not None:  # for admission's explanation only; never written
            self._unverified_refusals[device.id] = (now, f"{problem.value}: {reason}")
        raise ReportRefusedError(problem, reason)

    def _refuse_verified(
        self, now: datetime, device: Device, peer: str, problem: Problem, reason: str
    ) -> NoReturn:
        """Refuse a report signed by the device's key (stale, replayed, ahead of our clock,
        malformed, for another device): it is remembered on the device, so admission can say
        why no fresh report exists, and audited; a replayed one can be posted by anyone who
        saw it, so these too are written at most once per kind and window, the rest counted."""
        if self._tally.note(now, device.ae_title, problem.value, peer):
            actor = f"{device.ae_title}@{peer}"
            log.warning("posture report for %s refused (%s): %s", actor, problem.value, reason)
            try:
                with self._db.write() as conn:
                    conn.execute(
                        update(device_posture)
                        .where(device_posture.c.device_id == device.id)
                        .values(
                            last_refused_at=now.isoformat(),
                            last_refused=f"{problem.value}: {reason}",
                        )
                    )
                    self._audit.append(
                        conn,
                        AuditEvent(
                            "posture.rejected",
                            actor,
                            device.ae_title,
                            "refused",
                            {"problem": problem.value, "reason": reason},
                        ),
                    )
            except StorageError as e:
                log.error("could not record the refused posture report: %s", e)
        raise ReportRefusedError(problem, reason)

    def flush_refusals(self, now: datetime | None = None, final: bool = False) -> None:
        """Once a window has run out (``final``: now, at shutdown), log and audit (one entry)
        the refusals only counted in it. Called on every post and by the portal's
        housekeeping timer."""
        summary = self._tally.take_summary(now or self._clock.now(), force=final)
        if summary is None:
            return
        seconds = int((summary.ended - summary.started).total_seconds())
        kinds = "; ".join(
            f"{s.device} {s.problem} x{s.count} from {', '.join(s.peers)}"
            for s in summary.suppressed
        )
        log.warning(
            "%d more posture reports refused in the last %d s (first of each kind logged): %s",
            summary.total,
            seconds,
            kinds,
        )
        try:
            self._audit.record(
                AuditEvent(
                    "posture.rejected.summary",
                    "portal",
                    "*",
                    "refused",
                    {
                        "seconds": seconds,
                        "total": summary.total,
                        "kinds": [
                            {
                                "device": s.device,
                                "problem": s.problem,
                                "count": s.count,
                                "peers": list(s.peers),
                            }
                            for s in summary.suppressed
                        ],
                    },
                )
            )
        except StorageError as e:
            log.error("could not record the posture refusal summary: %s", e)


class _ReplayedError(Exception):
    """Internal: the nonce was seen before."""


class _KeyChangedError(Exception):
    """Internal: the device's key changed between verification and storing."""
