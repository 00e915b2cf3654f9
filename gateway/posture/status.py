"""A device's posture as admission sees it: a snapshot read once per association request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.posture.policy import NO_POLICY


@dataclass(frozen=True)
class PostureStatus:
    """The device's policy, its latest accepted report's verdict, and its last refusal.

    ``max_report_age`` is None when the device's policy is not defined in the policy file
    (a configuration error: admission refuses rather than guess a limit).
    """

    policy: str
    max_report_age: timedelta | None
    issued_at: datetime | None = None
    passed: bool | None = None
    reasons: tuple[str, ...] = ()
    last_refused_at: datetime | None = None
    last_refused: str | None = None

    @property
    def required(self) -> bool:
        """False only for a device explicitly enrolled with ``--posture-policy none``."""
        return self.policy != NO_POLICY
