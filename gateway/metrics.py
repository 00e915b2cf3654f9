"""The process's operational counters, for ``/metrics`` (Prometheus text format).

Why here, in the core: the events happen in the core (ingest, admission, posture, login,
retrieve) and ``ztbridge up`` runs the DICOM receiver, the anchoring worker and the portal in
one process, so one registry sees all of them; the portal only renders it (``exposition``).

Most counters follow the audit log: every event worth counting is already an audit event,
written through ``AuditLog.append``, which hands it to ``observe``. So a count can never
disagree with the audit trail by a forgotten call site (an event whose transaction rolls back
after ``append`` is still counted: rare, and a counter is an operational figure, not the
record). Retrieve bytes and latency are counted in ``gateway.retrieve`` as instances are read;
the anchor backlog and lag are read from the index at each scrape.

Labels are bounded sets (a DIMSE status name, an admission check, a login failure kind),
never a UID, user name or address: a scrape must not leak who did what, and a label fed from
the network would let a peer grow the registry without limit.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.dimse_status import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATASET_MISMATCH,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from gateway.audit import AuditEvent
    from gateway.clock import Clock
    from gateway.index.database import Database

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The process's registry (not prometheus-client's global one: nothing else registers here).
REGISTRY = CollectorRegistry(auto_describe=True)

INSTANCES = Counter(
    "ztbridge_instances_stored",
    "Instances received and stored (outcome: stored, new-version, duplicate)",
    ["outcome"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "ztbridge_instances_refused",
    "Instances refused, by the DIMSE status answered",
    ["reason"],
    registry=REGISTRY,
)
ASSOCIATIONS = Counter(
    "ztbridge_associations",
    "DICOM associations (result: accepted, refused, aborted)",
    ["result"],
    registry=REGISTRY,
)
ASSOCIATIONS_REFUSED = Counter(
    "ztbridge_associations_refused",
    "DICOM associations refused, by the admission check that refused them",
    ["check"],
    registry=REGISTRY,
)
POSTURE = Counter(
    "ztbridge_posture_verdicts",
    "Posture reports (verdict: pass, fail; rejected: not accepted as a report at all)",
    ["verdict"],
    registry=REGISTRY,
)
LOGINS = Counter(
    "ztbridge_logins",
    "Completed logins (password and second factor)",
    registry=REGISTRY,
)
LOGIN_FAILURES = Counter(
    "ztbridge_login_failures",
    "Failed login steps, by kind (unknown-user, password, code, suspended, ...)",
    ["reason"],
    registry=REGISTRY,
)
RETRIEVE_BYTES = Counter(
    "ztbridge_retrieve_bytes",
    "Verified, decrypted bytes read back out of the store (downloads, DICOMweb, export)",
    registry=REGISTRY,
)
RETRIEVE_SECONDS = Histogram(
    "ztbridge_retrieve_seconds",
    "Time to read one instance back, from opening it to its last verified byte",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)

_STATUS_NAMES = {
    STATUS_OUT_OF_RESOURCES: "out-of-resources",
    STATUS_DATASET_MISMATCH: "dataset-does-not-match-sop-class",
    STATUS_CANNOT_UNDERSTAND: "cannot-understand",
    STATUS_SOP_CLASS_NOT_SUPPORTED: "sop-class-not-supported",
    STATUS_PROCESSING_FAILURE: "processing-failure",
}
_LOGIN_REASONS = frozenset(
    {"unknown-user", "password", "code", "suspended", "not-enrolled", "keys"}
)
_CHECK_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def _status_name(status: object) -> str:
    try:
        code = int(str(status), 16)
    except ValueError:
        return "other"
    return _STATUS_NAMES.get(code, "other")


def _bounded(value: object, known: frozenset[str] | None = None) -> str:
    text = str(value or "")
    if known is not None:
        return text if text in known else "other"
    if not text or len(text) > 40 or not set(text) <= _CHECK_CHARS:
        return "other"
    return text


def observe(event: AuditEvent) -> None:
    """Count one audit event (called by ``AuditLog.append`` for every event)."""
    kind, detail = event.kind, event.detail
    if kind == "instance.stored":
        INSTANCES.labels("new-version" if detail.get("version", 1) != 1 else "stored").inc()
    elif kind == "instance.duplicate":
        INSTANCES.labels("duplicate").inc()
    elif kind == "instance.refused":
        REFUSED.labels(_status_name(detail.get("status"))).inc()
    elif kind == "association.accepted":
        ASSOCIATIONS.labels("accepted").inc()
    elif kind == "association.refused":
        ASSOCIATIONS.labels("refused").inc()
        ASSOCIATIONS_REFUSED.labels(_bounded(detail.get("check"))).inc()
    elif kind == "association.aborted":
        ASSOCIATIONS.labels("aborted").inc()
    elif kind == "posture.accepted":
        POSTURE.labels("pass" if detail.get("verdict") == "pass" else "fail").inc()
    elif kind == "posture.rejected":
        POSTURE.labels("rejected").inc()
    elif kind == "login.ok":
        LOGINS.inc()
    elif kind == "login.failed":
        LOGIN_FAILURES.labels(_bounded(detail.get("reason"), _LOGIN_REASONS)).inc()


def retrieved(nbytes: int, seconds: float) -> None:
    """Count one instance read back whole and verified."""
    RETRIEVE_BYTES.inc(nbytes)
    RETRIEVE_SECONDS.observe(seconds)


class AnchorBacklog(Collector):
    """The anchoring backlog and its lag, read from the index at scrape time."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def collect(self) -> list[Metric]:
        """Pending batches, instances not yet in a batch, and the oldest pending batch's age."""
        from gateway.anchoring.outbox import oldest_pending, outbox_counts

        counts = outbox_counts(self._db)
        backlog = GaugeMetricFamily(
            "ztbridge_anchor_backlog",
            "Work waiting to be anchored (batches: sealed, not yet on-chain; instances: not"
            " yet in a batch; audit: audit ranges pending)",
            labels=["what"],
        )
        backlog.add_metric(["batches"], counts.batches_pending)
        backlog.add_metric(["instances"], counts.unbatched_instances)
        backlog.add_metric(["audit"], counts.audit_pending)
        conflicts = GaugeMetricFamily(
            "ztbridge_anchor_conflicts",
            "Batches whose record id exists on-chain with other content",
        )
        conflicts.add_metric([], counts.batches_conflict)
        oldest = oldest_pending(self._db)
        lag = GaugeMetricFamily(
            "ztbridge_anchor_lag_seconds",
            "Age of the oldest batch waiting to be anchored (0: none waiting)",
        )
        lag.add_metric([], _age(oldest, self._clock.now()) if oldest else 0.0)
        return [backlog, conflicts, lag]


def _age(created_at: str, now: datetime) -> float:
    try:
        return max(0.0, (now - datetime.fromisoformat(created_at)).total_seconds())
    except (TypeError, ValueError):
        return 0.0


def exposition(db: Database, clock: Clock) -> bytes:
    """The whole text exposition: the process's counters, then the backlog of ``db``."""
    per_scrape = CollectorRegistry(auto_describe=False)
    per_scrape.register(AnchorBacklog(db, clock))
    return generate_latest(REGISTRY) + generate_latest(per_scrape)
