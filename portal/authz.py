"""Every study request decided by ``gateway.access.decide``, audited, and answered.

One function for the API, the pages and (issue #10) DICOMweb: the facts are read from the
index at each request (``accounts.facts``), the decision is an audit event whether it allows
or denies (who, which study, which action, the rule and why), and a denial becomes the
problem its visibility says: another user's study is a 404 with the very body an unknown UID
gets, never a 403.
"""

from __future__ import annotations

from gateway.access import Action, Decision, decide
from gateway.accounts.facts import facts_for
from gateway.audit import AuditEvent
from gateway.service import Gateway
from portal.deps import Caller
from portal.problems import NOT_FOUND_DETAIL, ProblemError


def record(gw: Gateway, caller: Caller, action: Action, subject: str, decision: Decision) -> None:
    """The audit event of one decision."""
    gw.audit.record(
        AuditEvent(
            "access.allowed" if decision.allowed else "access.denied",
            caller.username,
            subject[:200],
            "ok" if decision.allowed else "denied",
            {
                "action": action.value,
                "rule": decision.rule,
                "reason": decision.reason,
                "via": "token" if caller.bearer else "session",
            },
        )
    )


def raise_denied(decision: Decision) -> None:
    """The problem a denial shows as."""
    status = decision.status
    if status == 404:
        raise ProblemError("not-found", NOT_FOUND_DETAIL)
    if status == 401:
        raise ProblemError("unauthenticated", decision.reason)
    raise ProblemError("forbidden", decision.reason)


def authorize(gw: Gateway, caller: Caller, action: Action, study_uid: str | None = None) -> None:
    """Decide, audit, and raise the denial's problem; returns only when allowed."""
    decision = decide(facts_for(gw.db, caller.view, action, study_uid, gw.clock.now()))
    record(gw, caller, action, study_uid or action.value, decision)
    if not decision.allowed:
        raise_denied(decision)
