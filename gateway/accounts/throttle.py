"""Login throttling that slows guessing without ever locking the rightful user out.

Failures are counted per (account, source address) and per source address, never per
account alone: an attacker elsewhere can then slow only their own attempts, not the victim's
(a per-account lockout would let anyone lock any account by failing on purpose). Past
``free`` failures each key waits ``base * 2**(n - free)`` seconds after its last failure,
capped at ``cap``: a delay, always finite. A success clears the (account, address) count only:
an attacker with an account of their own cannot reset their address's count by logging in.
Unknown usernames are counted exactly like known ones (by name), so throttling tells nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from gateway.index.database import Database
from gateway.index.models import login_throttle


@dataclass(frozen=True)
class ThrottlePolicy:
    """When a key must wait: after ``free`` failures, doubling from ``base`` up to ``cap``."""

    free: int = 3
    base: float = 1.0
    cap: float = 300.0
    address_free: int = 20

    def delay(self, failures: int, free: int) -> float:
        """Seconds a key with ``failures`` must wait after its last failure."""
        if failures < free:
            return 0.0
        return float(min(self.cap, self.base * 2 ** min(failures - free, 60)))


def _keys(username: str, address: str) -> tuple[str, str]:
    name = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return f"ua:{name}@{address}"[:160], f"a:{address}"[:160]


class Throttle:
    """Counts failures in the index (shared by every gateway process on one index)."""

    def __init__(self, db: Database, policy: ThrottlePolicy) -> None:
        self._db = db
        self.policy = policy

    def retry_after(self, username: str, address: str, now: datetime) -> float:
        """Seconds to wait before this attempt may be checked (0: go ahead)."""
        pair, addr = _keys(username, address)
        with self._db.read() as conn:
            rows = {
                r.key: r
                for r in conn.execute(
                    select(login_throttle).where(login_throttle.c.key.in_([pair, addr]))
                )
            }
        wait = 0.0
        for key, free in ((pair, self.policy.free), (addr, self.policy.address_free)):
            row = rows.get(key)
            if row is None:
                continue
            until = datetime.fromisoformat(row.last_failure_at) + timedelta(
                seconds=self.policy.delay(int(row.failures), free)
            )
            wait = max(wait, (until - now).total_seconds())
        return max(0.0, wait)

    def failed(self, username: str, address: str, now: datetime) -> None:
        """Count one failure for the (account, address) and the address."""
        stamp = now.isoformat()
        with self._db.write() as conn:
            for key in _keys(username, address):
                done = conn.execute(
                    update(login_throttle)
                    .where(login_throttle.c.key == key)
                    .values(failures=login_throttle.c.failures + 1, last_failure_at=stamp)
                )
                if int(done.rowcount) == 0:
                    conn.execute(
                        insert(login_throttle).values(key=key, failures=1, last_failure_at=stamp)
                    )

    def succeeded(self, username: str, address: str) -> None:
        """Clear the (account, address) count after a complete login."""
        pair, _ = _keys(username, address)
        with self._db.write() as conn:
            conn.execute(delete(login_throttle).where(login_throttle.c.key == pair))
