"""Access is a pure function of the facts: a table of cases, each with its rule and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.access import (
    Action,
    Decision,
    Facts,
    Grant,
    Principal,
    Role,
    StudyFacts,
    Visibility,
    decide,
    visible_to,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
PATIENT = Principal(10, Role.PATIENT)
OTHER_PATIENT = Principal(11, Role.PATIENT)
DOCTOR = Principal(20, Role.DOCTOR)
OTHER_DOCTOR = Principal(21, Role.DOCTOR)
ADMIN = Principal(1, Role.ADMIN)
AUDITOR = Principal(2, Role.AUDITOR)
TECH = Principal(3, Role.TECHNOLOGIST)

OWNED = StudyFacts(owner_id=10)
SHARED = StudyFacts(owner_id=10, grants=(Grant(20),))
EXPIRED = StudyFacts(owner_id=10, grants=(Grant(20, expires_at=NOW - timedelta(seconds=1)),))
FUTURE = StudyFacts(owner_id=10, grants=(Grant(20, expires_at=NOW + timedelta(days=1)),))
REVOKED = StudyFacts(owner_id=10, grants=(Grant(20, revoked=True),))
CUSTODIAN = StudyFacts(owner_id=None)


def f(p: Principal | None, action: Action, study: StudyFacts | None = None) -> Facts:
    return Facts(p, action, NOW, study)


CASES: list[tuple[str, Facts, bool, str, int]] = [
    ("anonymous", f(None, Action.READ, OWNED), False, "authenticated", 401),
    (
        "password without TOTP",
        f(Principal(10, Role.PATIENT, second_factor=False), Action.READ, OWNED),
        False,
        "second-factor",
        401,
    ),
    (
        "suspended owner",
        f(Principal(10, Role.PATIENT, active=False), Action.READ, OWNED),
        False,
        "active",
        403,
    ),
    ("owner reads", f(PATIENT, Action.READ, OWNED), True, "owner", 200),
    ("owner reads metadata", f(PATIENT, Action.READ_METADATA, OWNED), True, "owner", 200),
    ("owner shares", f(PATIENT, Action.SHARE, OWNED), True, "owner", 200),
    ("owner revokes", f(PATIENT, Action.REVOKE, SHARED), True, "owner", 200),
    (
        "another patient's study is hidden",
        f(OTHER_PATIENT, Action.READ, OWNED),
        False,
        "visible",
        404,
    ),
    ("unknown study is hidden the same way", f(PATIENT, Action.READ, None), False, "exists", 404),
    (
        "custodian-owned study hidden from patients",
        f(PATIENT, Action.READ, CUSTODIAN),
        False,
        "visible",
        404,
    ),
    ("doctor with grant reads", f(DOCTOR, Action.READ, SHARED), True, "grant", 200),
    (
        "doctor with grant reads metadata",
        f(DOCTOR, Action.READ_METADATA, SHARED),
        True,
        "grant",
        200,
    ),
    (
        "doctor with grant may not re-share",
        f(DOCTOR, Action.SHARE, SHARED),
        False,
        "owner-only",
        403,
    ),
    (
        "doctor with grant may not revoke",
        f(DOCTOR, Action.REVOKE, SHARED),
        False,
        "owner-only",
        403,
    ),
    ("doctor without grant", f(OTHER_DOCTOR, Action.READ, SHARED), False, "visible", 404),
    ("doctor, expired grant", f(DOCTOR, Action.READ, EXPIRED), False, "visible", 404),
    ("doctor, grant not yet expired", f(DOCTOR, Action.READ, FUTURE), True, "grant", 200),
    ("doctor, revoked grant", f(DOCTOR, Action.READ, REVOKED), False, "visible", 404),
    (
        "a patient's id equal to a doctor grant id is not a grant",
        f(Principal(20, Role.PATIENT), Action.READ, SHARED),
        False,
        "visible",
        404,
    ),
    (
        "a doctor whose id equals the owner's is not the owner",
        f(Principal(10, Role.DOCTOR), Action.READ, OWNED),
        False,
        "visible",
        404,
    ),
    ("admin cannot read images", f(ADMIN, Action.READ, OWNED), False, "visible", 404),
    ("admin cannot read metadata", f(ADMIN, Action.READ_METADATA, OWNED), False, "visible", 404),
    ("auditor cannot read images", f(AUDITOR, Action.READ, SHARED), False, "visible", 404),
    ("technologist cannot read images", f(TECH, Action.READ, OWNED), False, "visible", 404),
    ("admin manages accounts", f(ADMIN, Action.MANAGE_ACCOUNTS), True, "role", 200),
    ("admin manages devices", f(ADMIN, Action.MANAGE_DEVICES), True, "role", 200),
    ("patient may not manage accounts", f(PATIENT, Action.MANAGE_ACCOUNTS), False, "role", 403),
    ("doctor may not manage devices", f(DOCTOR, Action.MANAGE_DEVICES), False, "role", 403),
    ("auditor reads the audit trail", f(AUDITOR, Action.READ_AUDIT), True, "role", 200),
    ("admin reads the audit trail", f(ADMIN, Action.READ_AUDIT), True, "role", 200),
    ("patient may not read the audit trail", f(PATIENT, Action.READ_AUDIT), False, "role", 403),
    ("technologist uploads", f(TECH, Action.UPLOAD), True, "role", 200),
    ("patient may not upload", f(PATIENT, Action.UPLOAD), False, "role", 403),
    ("admin uploads (STOW-RS, issue 10)", f(ADMIN, Action.UPLOAD), True, "role", 200),
    ("doctor may not upload", f(DOCTOR, Action.UPLOAD), False, "role", 403),
    ("auditor may not upload", f(AUDITOR, Action.UPLOAD), False, "role", 403),
    (
        "suspended technologist may not upload",
        f(Principal(5, Role.TECHNOLOGIST, active=False), Action.UPLOAD),
        False,
        "active",
        403,
    ),
    ("patient searches (own studies only)", f(PATIENT, Action.SEARCH), True, "role", 200),
    ("doctor searches (shared studies only)", f(DOCTOR, Action.SEARCH), True, "role", 200),
    ("admin does not search images", f(ADMIN, Action.SEARCH), False, "role", 403),
    (
        "suspended admin",
        f(Principal(1, Role.ADMIN, active=False), Action.MANAGE_ACCOUNTS),
        False,
        "active",
        403,
    ),
]


@pytest.mark.parametrize(
    ("case", "facts", "allowed", "rule", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(case: str, facts: Facts, allowed: bool, rule: str, status: int) -> None:
    d = decide(facts)
    assert (d.allowed, d.rule, d.status) == (allowed, rule, status), case
    assert d.reason


def test_hidden_is_indistinguishable_from_missing() -> None:
    """The same status and visibility for another user's study as for an unknown UID."""
    theirs = decide(f(OTHER_PATIENT, Action.READ, OWNED))
    missing = decide(f(OTHER_PATIENT, Action.READ, None))
    assert theirs.status == missing.status == 404
    assert theirs.visibility is missing.visibility is Visibility.HIDDEN


def test_every_action_is_decided_for_every_role() -> None:
    """No combination raises, and only listed rules ever allow."""
    for role in Role:
        for action in Action:
            d: Decision = decide(f(Principal(5, role), action, OWNED))
            if d.allowed:
                assert d.rule in {"owner", "grant", "role"}


def test_visible_to_filters_search_results() -> None:
    assert visible_to(PATIENT, OWNED, NOW)
    assert not visible_to(OTHER_PATIENT, OWNED, NOW)
    assert visible_to(DOCTOR, SHARED, NOW)
    assert not visible_to(DOCTOR, REVOKED, NOW)
    assert not visible_to(ADMIN, OWNED, NOW)
