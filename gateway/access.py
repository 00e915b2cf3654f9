"""Who may do what to which study: one pure decision, in the style of ``admission.py``.

Every request the portal, DICOMweb or the viewer serves is decided here, and nowhere else:
the caller gathers the facts (the principal behind the session or token, the action, and what
the index and the contract say about the study), calls ``decide`` and maps the decision to a
response. Keeping it pure (facts in, decision out; no I/O, no clock of its own) is what lets
the table of cases in ``tests/unit/test_access.py`` pin every rule.

Two rules shape every answer:

* Another user's study is indistinguishable from one that does not exist: a denial about a
  study the principal may not see is ``Visibility.HIDDEN`` (the portal answers 404, exactly as
  for an unknown UID), never 403.
* Nothing is readable by default. An admin manages accounts and devices but is never a
  reader of images (nothing is sealed to the admin); an auditor reads the audit trail only.

Where the facts come from is the portal's business (issue 9): ``Principal`` from the session
or token (validated on the server), ``StudyFacts`` from the index, with grants confirmed on
the chain, which is trusted over the index for any decision it can change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """The account roles (the contract's roles, plus the technologist who uploads)."""

    ADMIN = "admin"
    TECHNOLOGIST = "technologist"
    PATIENT = "patient"
    DOCTOR = "doctor"
    AUDITOR = "auditor"


class Action(StrEnum):
    """What a request wants to do."""

    SEARCH = "search"  # list or query studies (QIDO): filtered to the visible set, not denied
    READ = "read"  # retrieve instances or rendered frames (WADO, download, viewer)
    READ_METADATA = "read-metadata"  # attributes without pixels
    SHARE = "share"  # grant a doctor access to a study
    REVOKE = "revoke"  # end a doctor's access
    UPLOAD = "upload"  # STOW-RS
    MANAGE_ACCOUNTS = "manage-accounts"
    MANAGE_DEVICES = "manage-devices"
    READ_AUDIT = "read-audit"
    READ_ACTIVITY = "read-activity"  # one's own activity page (who accessed my studies)
    CHANGE_CREDENTIALS = "change-credentials"  # one's own password or TOTP secret


class Visibility(StrEnum):
    """How a denial shows: hidden (as if it did not exist) or plainly forbidden."""

    HIDDEN = "hidden"  # 404: the resource's existence is not revealed
    FORBIDDEN = "forbidden"  # 403: the principal may know it exists (its own, or not a study)
    UNAUTHENTICATED = "unauthenticated"  # 401: log in (or finish the second factor) first


@dataclass(frozen=True)
class Principal:
    """Who is asking, as the server-side session or token says."""

    account_id: int
    role: Role
    active: bool = True
    second_factor: bool = True  # password alone is not a login: TOTP completed


@dataclass(frozen=True)
class Grant:
    """A doctor's access to a study, as confirmed on the chain."""

    doctor_id: int
    expires_at: datetime | None = None
    revoked: bool = False


@dataclass(frozen=True)
class StudyFacts:
    """What is known about the study a request names (``None`` in ``Facts``: no such study)."""

    owner_id: int | None  # the patient account that owns it; None: still the custodian's
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True)
class Facts:
    """Everything ``decide`` looks at."""

    principal: Principal | None
    action: Action
    now: datetime
    study: StudyFacts | None = None


@dataclass(frozen=True)
class Decision:
    """Allow, or deny with a reason for the audit log and how the denial shows."""

    allowed: bool
    reason: str
    visibility: Visibility | None = None
    rule: str = ""

    @property
    def status(self) -> int:
        """The HTTP status a denial maps to (200 for an allowed request)."""
        if self.allowed:
            return 200
        return {
            Visibility.HIDDEN: 404,
            Visibility.FORBIDDEN: 403,
            Visibility.UNAUTHENTICATED: 401,
        }[self.visibility or Visibility.FORBIDDEN]


def _allow(rule: str, reason: str) -> Decision:
    return Decision(True, reason, None, rule)


def _deny(rule: str, reason: str, visibility: Visibility) -> Decision:
    return Decision(False, reason, visibility, rule)


_STUDY_ACTIONS = frozenset({Action.READ, Action.READ_METADATA, Action.SHARE, Action.REVOKE})
_ROLE_ACTIONS: dict[Action, frozenset[Role]] = {
    Action.UPLOAD: frozenset({Role.TECHNOLOGIST}),
    Action.MANAGE_ACCOUNTS: frozenset({Role.ADMIN}),
    Action.MANAGE_DEVICES: frozenset({Role.ADMIN}),
    Action.READ_AUDIT: frozenset({Role.AUDITOR, Role.ADMIN}),
    Action.SEARCH: frozenset({Role.PATIENT, Role.DOCTOR}),
    Action.READ_ACTIVITY: frozenset({Role.PATIENT, Role.DOCTOR}),
    Action.CHANGE_CREDENTIALS: frozenset(Role),
}


def grant_is_live(grant: Grant, now: datetime) -> bool:
    """A grant counts until it is revoked or its expiry passes."""
    return not grant.revoked and (grant.expires_at is None or now < grant.expires_at)


def _check_principal(f: Facts) -> Decision | None:
    p = f.principal
    if p is None:
        return _deny("authenticated", "not logged in", Visibility.UNAUTHENTICATED)
    if not p.second_factor:
        return _deny("second-factor", "second factor not completed", Visibility.UNAUTHENTICATED)
    if not p.active:
        return _deny("active", "account suspended", Visibility.FORBIDDEN)
    return None


def _check_role_action(f: Facts) -> Decision | None:
    """Actions that are about a role, not a study."""
    assert f.principal is not None
    allowed = _ROLE_ACTIONS.get(f.action)
    if allowed is None:
        return None
    if f.principal.role in allowed:
        return _allow("role", f"{f.principal.role} may {f.action}")
    return _deny("role", f"{f.principal.role} may not {f.action}", Visibility.FORBIDDEN)


def _check_study(f: Facts) -> Decision:
    """Study actions: the owner, or a doctor with a live grant; everyone else sees nothing."""
    p = f.principal
    assert p is not None
    study = f.study
    if study is None:
        return _deny("exists", "no such study", Visibility.HIDDEN)
    owns = p.role is Role.PATIENT and study.owner_id == p.account_id
    if owns:
        return _allow("owner", "the patient owns the study")
    granted = p.role is Role.DOCTOR and any(
        g.doctor_id == p.account_id and grant_is_live(g, f.now) for g in study.grants
    )
    if granted and f.action in (Action.READ, Action.READ_METADATA):
        return _allow("grant", "shared with this doctor")
    if granted:  # a doctor may read what is shared, never pass it on or end it
        return _deny("owner-only", "only the owning patient may share", Visibility.FORBIDDEN)
    return _deny("visible", "not the principal's study", Visibility.HIDDEN)


def decide(f: Facts) -> Decision:
    """The one authorization decision: first matching rule wins, the default is deny."""
    early = _check_principal(f)
    if early is not None:
        return early
    if f.action in _STUDY_ACTIONS:
        return _check_study(f)
    by_role = _check_role_action(f)
    if by_role is not None:
        return by_role
    return _deny("default", f"no rule allows {f.action}", Visibility.FORBIDDEN)


def visible_to(principal: Principal, study: StudyFacts, now: datetime) -> bool:
    """Whether a study belongs in the principal's search results (QIDO filters by this)."""
    return decide(Facts(principal, Action.READ_METADATA, now, study)).allowed
