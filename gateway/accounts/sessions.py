"""Server-side browser sessions and API tokens, with the user's unlocked keys in memory.

Every id or token handed out is 256 random bits; the index stores only its SHA-256, so a copy
of the database lets nobody in. Rows are checked on every request (never a cached answer), so
a logout, a suspension or a recovery done by another process (the CLI) ends a session at its
next request.

* Browser session: a ``pending`` row after the password step (it may only finish the second
  factor, within ``second_factor_minutes``), replaced by a ``full`` row with a new id after
  the TOTP code (the id rotates at both steps: no session fixation). Idle and absolute
  timeouts (``idle_minutes``, ``absolute_hours``) are checked on the server.
* Tokens for programs: an access token of minutes and a refresh token; using a refresh token
  spends it and returns a new pair of the same family; spending one twice (it was stolen, or
  replayed) revokes the whole family at once.

The unlocked keys (``keys.UnlockedKeys``) are kept in this process's ``KeyRing`` per family,
never written anywhere, and wiped when the family ends (logout, expiry, suspension, recovery,
a refresh-token reuse). A session whose keys are not in this process's memory (the gateway
restarted) is over: the user logs in again.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update

from gateway.accounts.errors import RefreshReuseError, SessionError
from gateway.accounts.keys import UnlockedKeys
from gateway.clock import Clock
from gateway.index.database import Database
from gateway.index.models import auth_sessions, users

BROWSER = "browser"
ACCESS = "access"
REFRESH = "refresh"
PENDING = "pending"
FULL = "full"


def id_hash(opaque: str) -> str:
    """How the index names a session id or token."""
    return hashlib.sha256(b"ztbridge session\0" + opaque.encode()).hexdigest()


def _new_id() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class SessionPolicy:
    """Lifetimes, from settings."""

    idle: timedelta = timedelta(minutes=15)
    absolute: timedelta = timedelta(hours=8)
    second_factor: timedelta = timedelta(minutes=5)
    access: timedelta = timedelta(minutes=5)
    refresh: timedelta = timedelta(hours=8)


@dataclass(frozen=True)
class SessionView:
    """A valid session or token: whose it is, how far it got, and the user's keys."""

    user_id: int
    username: str
    role: str
    kind: str
    stage: str
    family: str
    keys: UnlockedKeys | None

    @property
    def complete(self) -> bool:
        """Both factors done."""
        return self.stage == FULL


@dataclass(frozen=True)
class TokenPair:
    """What ``POST /api/token`` returns."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class KeyRing:
    """Unlocked keys per session family, in this process only."""

    def __init__(self) -> None:
        self._keys: dict[str, UnlockedKeys] = {}
        self._lock = threading.Lock()

    def put(self, family: str, keys: UnlockedKeys) -> None:
        """Hold ``keys`` for ``family`` (replacing and wiping any earlier ones)."""
        with self._lock:
            old = self._keys.pop(family, None)
            self._keys[family] = keys
        if old is not None and old is not keys:
            old.wipe()

    def get(self, family: str) -> UnlockedKeys | None:
        """The family's keys, if this process holds them."""
        with self._lock:
            return self._keys.get(family)

    def drop(self, families: list[str] | set[str]) -> None:
        """Wipe and forget these families' keys."""
        with self._lock:
            gone = [self._keys.pop(f) for f in families if f in self._keys]
        for k in gone:
            k.wipe()

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


#: The idle timer's resolution (see ``Sessions.check``).
TOUCH_EVERY = timedelta(seconds=30)


class Sessions:
    """Issue, check, rotate and end sessions and tokens."""

    def __init__(self, db: Database, clock: Clock, policy: SessionPolicy) -> None:
        self._db = db
        self._clock = clock
        self.policy = policy
        self.keyring = KeyRing()
        #: How stale ``last_seen_at`` may get before a request writes it again.
        self._touch_every = min(TOUCH_EVERY, policy.idle / 10)

    # -- issuing ----------------------------------------------------------------------------

    def _insert(self, user_id: int, kind: str, family: str, stage: str, expires: datetime) -> str:
        opaque = _new_id()
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            conn.execute(
                insert(auth_sessions).values(
                    id_hash=id_hash(opaque),
                    user_id=user_id,
                    kind=kind,
                    family=family,
                    stage=stage,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires.isoformat(),
                )
            )
        return opaque

    def start_pending(self, user_id: int, keys: UnlockedKeys, previous: str | None = None) -> str:
        """A session that has passed the password step only (a new id; ``previous``, the
        browser's session before login if any, is ended: the id rotates at login)."""
        if previous:
            self.end(previous, "rotated")
        family = secrets.token_hex(16)
        self.keyring.put(family, keys)
        return self._insert(
            user_id, BROWSER, family, PENDING, self._clock.now() + self.policy.second_factor
        )

    def complete(self, pending_id: str) -> str:
        """After the second factor: a ``full`` session with a new id; the pending one ends."""
        view = self.check(pending_id, allow_pending=True)
        if view.stage != PENDING:
            raise SessionError("this session has already completed its login")
        self._end_rows([id_hash(pending_id)], "rotated", wipe=False)
        return self._insert(
            view.user_id, BROWSER, view.family, FULL, self._clock.now() + self.policy.absolute
        )

    def issue_tokens(self, user_id: int, keys: UnlockedKeys) -> TokenPair:
        """A new token family (both factors were checked by the caller)."""
        family = secrets.token_hex(16)
        self.keyring.put(family, keys)
        return self._pair(user_id, family, self._clock.now() + self.policy.refresh)

    def _pair(self, user_id: int, family: str, family_end: datetime) -> TokenPair:
        now = self._clock.now()
        access_end = min(now + self.policy.access, family_end)
        access = self._insert(user_id, ACCESS, family, FULL, access_end)
        refresh = self._insert(user_id, REFRESH, family, FULL, family_end)
        return TokenPair(access, refresh, max(0, int((access_end - now).total_seconds())))

    def refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token for a new pair; a second use revokes the whole family."""
        h = id_hash(refresh_token)
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            row = conn.execute(select(auth_sessions).where(auth_sessions.c.id_hash == h)).first()
            if row is None or row.kind != REFRESH:
                raise SessionError("unknown refresh token")
            spent = conn.execute(
                update(auth_sessions)
                .where(
                    auth_sessions.c.id_hash == h,
                    auth_sessions.c.used_at.is_(None),
                    auth_sessions.c.ended_at.is_(None),
                )
                .values(used_at=now)
            )
            reused = int(spent.rowcount) == 0
            if reused:
                conn.execute(
                    update(auth_sessions)
                    .where(auth_sessions.c.family == row.family, auth_sessions.c.ended_at.is_(None))
                    .values(ended_at=now, ended_reason="refresh-reuse")
                )
        if reused:
            self.keyring.drop({row.family})
            raise RefreshReuseError(
                "this refresh token was already used: every token of its login is revoked;"
                " log in again"
            )
        self.check(refresh_token, kind=REFRESH, touch=False, allow_used=True)
        return self._pair(int(row.user_id), row.family, datetime.fromisoformat(row.expires_at))

    # -- checking ---------------------------------------------------------------------------

    def check(
        self,
        opaque: str,
        *,
        kind: str | None = None,
        allow_pending: bool = False,
        touch: bool = True,
        allow_used: bool = False,
    ) -> SessionView:
        """The session or token ``opaque`` names, if it is valid now; SessionError otherwise
        (and then its keys are wiped if it timed out). ``touch`` moves the idle timer."""
        h = id_hash(opaque)
        now = self._clock.now()
        with self._db.read() as conn:
            row = conn.execute(
                select(
                    auth_sessions,
                    users.c.username,
                    users.c.role,
                    users.c.suspended,
                )
                .join(users, users.c.id == auth_sessions.c.user_id)
                .where(auth_sessions.c.id_hash == h)
            ).first()
        if row is None:
            raise SessionError("not logged in (unknown session)")
        if row.ended_at is not None:
            rotated = row.ended_reason == "rotated"  # its family lives on under a new id
            if not rotated and (row.kind != ACCESS or row.ended_reason != "expired"):
                self.keyring.drop({row.family})  # ended elsewhere (another process, the CLI)
            raise SessionError(f"not logged in (session ended: {row.ended_reason})")
        if kind is not None and row.kind != kind:
            raise SessionError(f"a {row.kind} id was given where a {kind} was expected")
        if row.used_at is not None and not allow_used:
            raise SessionError("this refresh token was already used")
        if row.stage == PENDING and not allow_pending:
            raise SessionError("the second factor is not done yet")
        reason = None
        if row.suspended:
            reason = "suspended"
        elif now >= datetime.fromisoformat(row.expires_at):
            reason = "expired"
        elif (
            row.kind == BROWSER
            and row.stage == FULL
            and now - datetime.fromisoformat(row.last_seen_at) >= self.policy.idle
        ):
            reason = "idle"
        keys = self.keyring.get(row.family)
        if reason is None and keys is None:
            reason = "keys-gone"  # this process restarted since the login
        if reason is not None:
            if reason == "suspended":
                self.end_user(int(row.user_id), "suspended")
            else:
                self._end_rows([h], reason, wipe=row.kind != ACCESS)
            raise SessionError(f"not logged in (session {reason})")
        if (
            touch
            and row.kind == BROWSER
            and now - datetime.fromisoformat(row.last_seen_at) >= self._touch_every
        ):
            # Coarse on purpose: a viewer fetching 300 frames would otherwise queue 300
            # writes behind ingest's write lock; the idle timer loses at most this much.
            with self._db.write() as conn:
                conn.execute(
                    update(auth_sessions)
                    .where(auth_sessions.c.id_hash == h)
                    .values(last_seen_at=now.isoformat())
                )
        return SessionView(
            int(row.user_id), row.username, row.role, row.kind, row.stage, row.family, keys
        )

    def held_keys(self, user_id: int) -> UnlockedKeys | None:
        """The user's unlocked keys if this process holds them for a live, completed session
        or token family (for work the user asked for earlier, e.g. a share's expiry revoke);
        None when the user is not logged in here."""
        now = self._clock.now()
        with self._db.read() as conn:
            families = conn.execute(
                select(auth_sessions.c.family)
                .where(
                    auth_sessions.c.user_id == user_id,
                    auth_sessions.c.stage == FULL,
                    auth_sessions.c.ended_at.is_(None),
                    auth_sessions.c.expires_at > now.isoformat(),
                    # a browser session idle past its timeout is over, checked or not
                    (auth_sessions.c.kind != BROWSER)
                    | (auth_sessions.c.last_seen_at > (now - self.policy.idle).isoformat()),
                )
                .distinct()
            ).scalars()
            for family in families:
                keys = self.keyring.get(family)
                if keys is not None and not keys.wiped:
                    return keys
        return None

    # -- ending -----------------------------------------------------------------------------

    def _end_rows(self, hashes: list[str], reason: str, *, wipe: bool) -> None:
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            families = {
                r.family
                for r in conn.execute(
                    select(auth_sessions.c.family).where(auth_sessions.c.id_hash.in_(hashes))
                )
            }
            conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.id_hash.in_(hashes), auth_sessions.c.ended_at.is_(None))
                .values(ended_at=now, ended_reason=reason)
            )
        if wipe:
            self.keyring.drop(families)

    def end(self, opaque: str, reason: str = "logout") -> None:
        """Logout: end this session or token's whole family (its tokens, its keys)."""
        with self._db.read() as conn:
            row = conn.execute(
                select(auth_sessions.c.family).where(auth_sessions.c.id_hash == id_hash(opaque))
            ).first()
        if row is not None:
            self.end_family(row.family, reason)

    def end_family(self, family: str, reason: str) -> None:
        """End every row of ``family`` and wipe its keys."""
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.family == family, auth_sessions.c.ended_at.is_(None))
                .values(ended_at=now, ended_reason=reason)
            )
        self.keyring.drop({family})

    def end_user(self, user_id: int, reason: str) -> int:
        """End every session and token of ``user_id`` at once; how many were live."""
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            families = {
                r.family
                for r in conn.execute(
                    select(auth_sessions.c.family).where(auth_sessions.c.user_id == user_id)
                )
            }
            done = conn.execute(
                update(auth_sessions)
                .where(auth_sessions.c.user_id == user_id, auth_sessions.c.ended_at.is_(None))
                .values(ended_at=now, ended_reason=reason)
            )
        self.keyring.drop(families)
        return int(done.rowcount)

    def end_others(self, user_id: int, keep_family: str, reason: str) -> int:
        """End every session and token of ``user_id`` except the family ``keep_family`` (the
        one that asked: a password change logs out everything else); how many were live."""
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            families = {
                r.family
                for r in conn.execute(
                    select(auth_sessions.c.family).where(
                        auth_sessions.c.user_id == user_id, auth_sessions.c.family != keep_family
                    )
                )
            }
            done = conn.execute(
                update(auth_sessions)
                .where(
                    auth_sessions.c.user_id == user_id,
                    auth_sessions.c.family != keep_family,
                    auth_sessions.c.ended_at.is_(None),
                )
                .values(ended_at=now, ended_reason=reason)
            )
        self.keyring.drop(families)
        return int(done.rowcount)
