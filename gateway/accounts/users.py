"""The account service: add, enroll, log in (password then TOTP), suspend, reinstate, recover.

What the CLI commands and the portal's routers call; each of them stays a thin shell around
one of these methods. Every state change is an audit event; no secret (password, code, token,
key) is ever logged or audited.

Logging in answers the same ``AuthenticationError`` for an unknown user, a wrong password, a
suspended or not yet enrolled account and a wrong or replayed code, and an unknown user costs
the same argon2 run as a known one (``Passwords.verify`` checks a dummy hash), so neither the
answer nor its timing tells whether an account exists. Throttling (``throttle.py``) delays
repeated failures per (account, address) and per address, never forever.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from gateway import crypto
from gateway.access import Role
from gateway.accounts import enrollment, keys, recovery_codes, totp
from gateway.accounts.errors import (
    AccountExistsError,
    AuthenticationError,
    EnrollmentError,
    ThrottledError,
    UnknownAccountError,
)
from gateway.accounts.keys import UnlockedKeys
from gateway.accounts.passwords import Argon2Params, Passwords, check_new_password
from gateway.accounts.sessions import PENDING, SessionPolicy, Sessions, TokenPair
from gateway.accounts.throttle import Throttle, ThrottlePolicy
from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.errors import CryptoError, InvalidEnvelopeError, InvalidInputError
from gateway.index.database import Database
from gateway.index.models import auth_sessions, users
from gateway.index.models import recovery_codes as recovery_table
from gateway.index.sealing import IndexCipher
from gateway.keys import CustodianPublic
from gateway.settings import Settings

_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
#: Roles the registry contract knows (addUser); a technologist has no on-chain role.
ON_CHAIN_ROLES = frozenset({Role.ADMIN, Role.PATIENT, Role.DOCTOR, Role.AUDITOR})
CHAIN_PENDING = "pending"
CHAIN_SYNCED = "synced"
CHAIN_NONE = "none"


@dataclass(frozen=True)
class Account:
    """An account as the index holds it (no secret in it)."""

    id: int
    username: str
    role: Role
    display_name: str
    suspended: bool
    enrolled: bool
    address: str
    kem: crypto.KemName
    hpke_public: bytes
    chain_state: str
    created_at: str
    enrolled_at: str | None

    @property
    def recipient(self) -> str:
        """The account's name in ``key_wraps`` (``user:0x…``)."""
        from gateway.keywraps import user_recipient

        return user_recipient(self.address)


@dataclass(frozen=True)
class Invitation:
    """A one-time enrollment link (shown once; the token is stored only hashed)."""

    username: str
    token: str
    url: str
    expires_at: str


@dataclass(frozen=True)
class Provisioned:
    """A scripted account: its TOTP secret and recovery codes, to hand over once."""

    account: Account
    totp_secret: str
    recovery_codes: list[str]


@dataclass(frozen=True)
class EnrollmentOffer:
    """What the enrollment page shows: the TOTP secret as text, URI and QR code."""

    username: str
    role: Role
    totp_secret: str
    uri: str
    qr_svg: str


def _account(row: Any) -> Account:
    return Account(
        id=int(row.id),
        username=row.username,
        role=Role(row.role),
        display_name=row.display_name,
        suspended=bool(row.suspended),
        enrolled=row.enrolled_at is not None,
        address=row.eth_address,
        kem=row.hpke_kem,
        hpke_public=bytes(row.hpke_public),
        chain_state=row.chain_state,
        created_at=row.created_at,
        enrolled_at=row.enrolled_at,
    )


def normal_username(username: str) -> str:
    """The canonical (lower-case) form; InvalidInputError naming the rule otherwise."""
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise InvalidInputError(
            f"username {username!r}: use 2-64 characters, letters, digits and . _ @ -,"
            " starting with a letter or digit"
        )
    return name


def parse_role(role: str) -> Role:
    """A role by name; InvalidInputError listing the roles otherwise."""
    try:
        return Role(role.strip().lower())
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise InvalidInputError(f"unknown role {role!r}: use one of {names}") from None


class Accounts:
    """The account service over the index (one per process; the portal and CLI share it)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        clock: Clock,
        settings: Settings,
        custodian: CustodianPublic,
    ) -> None:
        if db.cipher is None:
            raise InvalidInputError("accounts need the index opened with its index key")
        self._db = db
        self._cipher: IndexCipher = db.cipher
        self._audit = audit
        self._clock = clock
        self._custodian = custodian
        self.settings = settings
        a, s = settings.accounts, settings.sessions
        self.params = Argon2Params(a.argon2_memory_kib, a.argon2_time_cost, a.argon2_parallelism)
        self.passwords = Passwords(self.params)
        self.throttle = Throttle(
            db,
            ThrottlePolicy(
                a.throttle_free_failures,
                a.throttle_base_seconds,
                a.throttle_max_seconds,
                a.throttle_address_free_failures,
            ),
        )
        self.sessions = Sessions(
            db,
            clock,
            SessionPolicy(
                idle=timedelta(minutes=s.idle_minutes),
                absolute=timedelta(hours=s.absolute_hours),
                second_factor=timedelta(minutes=s.second_factor_minutes),
                access=timedelta(minutes=s.access_token_minutes),
                refresh=timedelta(hours=s.refresh_token_hours),
            ),
        )

    @property
    def cipher(self) -> IndexCipher:
        """The index key's cipher (sealed secrets of the accounts)."""
        return self._cipher

    # -- reading ----------------------------------------------------------------------------

    def _row(self, username: str) -> Any:
        with self._db.read() as conn:
            return conn.execute(
                select(users).where(users.c.username == username.strip().lower())
            ).first()

    def get(self, username: str) -> Account:
        """The account; UnknownAccountError naming the fix otherwise."""
        row = self._row(username)
        if row is None:
            raise UnknownAccountError(f"no account {username!r} ('ztbridge user list' shows them)")
        return _account(row)

    def by_id(self, user_id: int) -> Account:
        """The account with this id."""
        with self._db.read() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        if row is None:
            raise UnknownAccountError(f"no account with id {user_id}")
        return _account(row)

    def all(self) -> list[Account]:
        """Every account, by username."""
        with self._db.read() as conn:
            rows = conn.execute(select(users).order_by(users.c.username)).all()
        return [_account(r) for r in rows]

    def find_doctors(self, text: str) -> list[Account]:
        """Active, enrolled doctor accounts whose name or username contains ``text`` (any
        case): whom a patient can share with."""
        needle = text.strip().lower()
        return [
            a
            for a in self.all()
            if a.role is Role.DOCTOR
            and a.enrolled
            and not a.suspended
            and (needle in a.display_name.lower() or needle in a.username)
        ]

    def link_url(self, token: str) -> str:
        """The enrollment page for ``token``."""
        base = self.settings.accounts.public_url or f"https://localhost:{self.settings.portal.port}"
        return f"{base}/enroll/{token}"

    # -- creating ---------------------------------------------------------------------------

    def _create(self, username: str, role: Role, display_name: str, unlocked: UnlockedKeys) -> int:
        now = self._clock.now().isoformat()
        with self._db.write() as conn:
            if conn.execute(select(users.c.id).where(users.c.username == username)).first():
                raise AccountExistsError(f"an account {username!r} already exists")
            result = conn.execute(
                insert(users).values(
                    username=username,
                    role=role.value,
                    display_name=display_name,
                    suspended=False,
                    eth_address=unlocked.address,
                    hpke_kem=unlocked.kem,
                    hpke_public=unlocked.hpke_public,
                    keys_escrow=keys.escrow(unlocked, self._custodian),
                    keys_sealed=None,
                    password_hash=None,
                    totp_secret_sealed=None,
                    totp_last_step=-1,
                    chain_state=CHAIN_PENDING if role in ON_CHAIN_ROLES else CHAIN_NONE,
                    created_at=now,
                    enrolled_at=None,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def add(self, username: str, role: str | Role, display_name: str, actor: str) -> Invitation:
        """A new account with fresh keys, and its one-time enrollment link."""
        name = normal_username(username)
        chosen = role if isinstance(role, Role) else parse_role(role)
        unlocked = keys.generate(self.settings.crypto.kem)
        try:
            user_id = self._create(name, chosen, display_name.strip(), unlocked)
            invitation = self._invite(user_id, name, unlocked, enrollment.ENROLL)
        finally:
            unlocked.wipe()
        self._audit.record(
            AuditEvent(
                "user.added",
                actor,
                name,
                "ok",
                {"role": chosen.value, "address": unlocked.address, "method": "link"},
            )
        )
        return invitation

    def _invite(self, user_id: int, name: str, unlocked: UnlockedKeys, purpose: str) -> Invitation:
        token = enrollment.new_token()
        now = self._clock.now()
        hours = self.settings.accounts.enrollment_hours
        with self._db.write() as conn:
            enrollment.issue(
                conn, user_id, purpose, keys.seal_with_token(unlocked, token), token, now, hours
            )
        expires = (now + timedelta(hours=hours)).isoformat()
        return Invitation(name, token, self.link_url(token), expires)

    def provision(
        self, username: str, role: str | Role, display_name: str, password: str, actor: str
    ) -> Provisioned:
        """A new account, enrolled at once (scripted provisioning): password given, TOTP
        secret and recovery codes returned to be handed over. No code was ever accepted, so
        the first login may use any current code."""
        name = normal_username(username)
        chosen = role if isinstance(role, Role) else parse_role(role)
        check_new_password(password, self.settings.accounts.password_min_length)
        unlocked = keys.generate(self.settings.crypto.kem)
        secret = totp.new_secret()
        codes = recovery_codes.new_codes()
        try:
            user_id = self._create(name, chosen, display_name.strip(), unlocked)
            self._set_credentials(user_id, unlocked, password, secret, -1, codes)
        finally:
            unlocked.wipe()
        self._audit.record(
            AuditEvent(
                "user.added",
                actor,
                name,
                "ok",
                {"role": chosen.value, "address": unlocked.address, "method": "provisioned"},
            )
        )
        return Provisioned(self.get(name), secret, codes)

    def _set_credentials(
        self,
        user_id: int,
        unlocked: UnlockedKeys,
        password: str,
        secret: str,
        last_step: int,
        codes: list[str],
        token: str | None = None,
    ) -> None:
        """Password, sealed keys, TOTP secret and recovery codes, in one transaction (with
        the enrollment token spent in it, when there is one)."""
        now = self._clock.now()
        password_hash = self.passwords.hash(password)
        sealed_keys = keys.seal_with_password(unlocked, password, self.params)
        sealed_secret = self._cipher.seal("users", "totp_secret", str(user_id), secret.encode())
        with self._db.write() as conn:
            if token is not None and not enrollment.spend(conn, token, now):
                raise EnrollmentError(
                    "this enrollment link was used meanwhile; ask an administrator for a new one"
                )
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    password_hash=password_hash,
                    keys_sealed=sealed_keys,
                    totp_secret_sealed=sealed_secret,
                    totp_last_step=last_step,
                    enrolled_at=now.isoformat(),
                )
            )
            recovery_codes.replace_codes(conn, user_id, codes, now.isoformat())

    # -- enrolling --------------------------------------------------------------------------

    def offer(self, token: str) -> EnrollmentOffer:
        """The TOTP secret to enroll with this link (the same one each time it is asked)."""
        found = enrollment.find(self._db, token, self._clock.now())
        ad = f"{found.token_hash}"
        if found.totp_secret_sealed is None:
            sealed = self._cipher.seal(
                "enrollment_tokens", "totp_secret", ad, totp.new_secret().encode()
            )
            enrollment.set_pending_secret(self._db, token, sealed)
            found = enrollment.find(self._db, token, self._clock.now())
        assert found.totp_secret_sealed is not None
        secret = self._cipher.open(
            "enrollment_tokens", "totp_secret", ad, found.totp_secret_sealed
        ).decode()
        account = self.by_id(found.user_id)
        uri = totp.provisioning_uri(secret, account.username, self.settings.accounts.totp_issuer)
        return EnrollmentOffer(account.username, account.role, secret, uri, totp.qr_svg(uri))

    def enroll(self, token: str, password: str, code: str) -> list[str]:
        """Finish an enrollment (or a recovery): the password chosen, the first TOTP code of
        the offered secret confirmed. Returns the ten recovery codes, to show once."""
        now = self._clock.now()
        found = enrollment.find(self._db, token, now)
        check_new_password(password, self.settings.accounts.password_min_length)
        if found.totp_secret_sealed is None:
            raise EnrollmentError("open the enrollment page first: it shows the TOTP secret")
        secret = self._cipher.open(
            "enrollment_tokens", "totp_secret", found.token_hash, found.totp_secret_sealed
        ).decode()
        step = totp.matching_step(secret, code, now, self.settings.accounts.totp_valid_window)
        if step is None:
            raise EnrollmentError(
                "the code does not match the secret shown; check the phone's clock and enter"
                " the current code"
            )
        try:
            unlocked = keys.open_with_token(found.keys_sealed, token)
        except CryptoError as e:
            raise EnrollmentError(str(e)) from e
        codes = recovery_codes.new_codes()
        try:
            self._set_credentials(found.user_id, unlocked, password, secret, step, codes, token)
        finally:
            unlocked.wipe()
        account = self.by_id(found.user_id)
        self.sessions.end_user(account.id, "enrolled")
        self._audit.record(
            AuditEvent(
                "user.enrolled",
                account.username,
                account.username,
                "ok",
                {"purpose": found.purpose},
            )
        )
        return codes

    # -- logging in -------------------------------------------------------------------------

    def _refuse(self, username: str, address: str, why: str) -> AuthenticationError:
        self.throttle.failed(username, address, self._clock.now())
        # An unknown "username" may be a password typed in the wrong field: never audit it.
        subject = (
            username
            if why != "unknown-user"
            else "unknown:" + hashlib.sha256(username.encode()).hexdigest()[:16]
        )
        self._audit.record(
            AuditEvent(
                "login.failed", f"address:{address}", subject[:200], "denied", {"reason": why}
            )
        )
        return AuthenticationError()

    def _check_throttle(self, username: str, address: str) -> None:
        wait = self.throttle.retry_after(username, address, self._clock.now())
        if wait > 0:
            raise ThrottledError(wait)

    def _password_step(
        self, username: str, password: str, address: str
    ) -> tuple[Any, UnlockedKeys]:
        self._check_throttle(username, address)
        row = self._row(username) if _USERNAME.fullmatch(username.strip().lower()) else None
        ok = self.passwords.verify(row.password_hash if row is not None else None, password)
        if row is None:
            raise self._refuse(username, address, "unknown-user")
        if not ok:
            raise self._refuse(username, address, "password")
        if row.suspended or row.enrolled_at is None or row.keys_sealed is None:
            raise self._refuse(username, address, "suspended" if row.suspended else "not-enrolled")
        try:
            unlocked = keys.open_with_password(bytes(row.keys_sealed), password)
        except InvalidEnvelopeError:
            raise self._refuse(username, address, "keys") from None
        if self.passwords.needs_rehash(row.password_hash):
            self._rehash(row, unlocked, password)
        return row, unlocked

    def _rehash(self, row: Any, unlocked: UnlockedKeys, password: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == row.id)
                .values(
                    password_hash=self.passwords.hash(password),
                    keys_sealed=keys.seal_with_password(unlocked, password, self.params),
                )
            )

    def _second_factor(self, row: Any, code: str) -> str | None:
        """Which factor ``code`` satisfied (``totp`` or ``recovery-code``); None: neither."""
        now = self._clock.now()
        if recovery_codes.looks_like_code(code):
            used = recovery_codes.use_code(self._db, int(row.id), code, now.isoformat())
            return "recovery-code" if used else None
        if row.totp_secret_sealed is None:
            return None
        secret = self._cipher.open(
            "users", "totp_secret", str(row.id), bytes(row.totp_secret_sealed)
        ).decode()
        step = totp.matching_step(secret, code, now, self.settings.accounts.totp_valid_window)
        if step is None or not totp.accept_step(self._db, int(row.id), step):
            return None  # wrong, or this step (or a later one) was already accepted
        return "totp"

    def reauthenticate(self, username: str, password: str, code: str, address: str) -> UnlockedKeys:
        """The password and a fresh second factor again, before a change of credentials: the
        checks, throttle and audit of a login (a code accepted once is refused after).
        Returns the keys the password opens; the caller wipes them."""
        row, unlocked = self._password_step(username, password, address)
        if self._second_factor(row, code) is None:
            unlocked.wipe()
            raise self._refuse(row.username, address, "code")
        self.throttle.succeeded(row.username, address)
        return unlocked

    def store_password(self, user_id: int, unlocked: UnlockedKeys, password: str) -> None:
        """A new password: its hash, and the same private keys sealed under a key derived
        from it (argon2id, a fresh salt). The keys do not change, so every key wrap, share
        and the custodian escrow stay valid."""
        with self._db.write() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    password_hash=self.passwords.hash(password),
                    keys_sealed=keys.seal_with_password(unlocked, password, self.params),
                )
            )

    def store_totp(self, user_id: int, secret: str, step: int) -> None:
        """A new TOTP secret (sealed); ``step``, the one its first code matched, counts as
        accepted (never moving the last accepted step back)."""
        sealed = self._cipher.seal("users", "totp_secret", str(user_id), secret.encode())
        with self._db.write() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(
                    totp_secret_sealed=sealed,
                    totp_last_step=func.max(users.c.totp_last_step, step)
                    if self._db.is_sqlite
                    else func.greatest(users.c.totp_last_step, step),
                )
            )

    def login_password(
        self, username: str, password: str, address: str, previous_session: str | None = None
    ) -> str:
        """Step 1: the password. Returns a pending session id (a new one: the id rotates)
        that may only complete the second factor. AuthenticationError / ThrottledError."""
        row, unlocked = self._password_step(username, password, address)
        return self.sessions.start_pending(int(row.id), unlocked, previous_session)

    def login_second_factor(self, pending_session: str, code: str, address: str) -> str:
        """Step 2: a TOTP code (or a recovery code). Returns the full session's new id."""
        from gateway.accounts.errors import SessionError

        try:
            view = self.sessions.check(pending_session, allow_pending=True, touch=False)
        except SessionError:
            raise AuthenticationError() from None
        if view.stage != PENDING:
            raise AuthenticationError()
        self._check_throttle(view.username, address)
        row = self._row(view.username)
        factor = self._second_factor(row, code) if row is not None and not row.suspended else None
        if factor is None:
            raise self._refuse(view.username, address, "code")
        self.throttle.succeeded(view.username, address)
        session = self.sessions.complete(pending_session)
        self._audit.record(
            AuditEvent(
                "login.ok",
                view.username,
                view.username,
                "ok",
                {"kind": "session", "factor": factor, "address": address},
            )
        )
        return session

    def login_token(self, username: str, password: str, code: str, address: str) -> TokenPair:
        """Password and code at once (``POST /api/token``): an access + refresh token pair."""
        row, unlocked = self._password_step(username, password, address)
        factor = self._second_factor(row, code)
        if factor is None:
            unlocked.wipe()
            raise self._refuse(row.username, address, "code")
        self.throttle.succeeded(row.username, address)
        pair = self.sessions.issue_tokens(int(row.id), unlocked)
        self._audit.record(
            AuditEvent(
                "login.ok",
                row.username,
                row.username,
                "ok",
                {"kind": "token", "factor": factor, "address": address},
            )
        )
        return pair

    def logout(self, session_or_token: str, actor: str) -> None:
        """End the session (or the token's family) and wipe its keys."""
        self.sessions.end(session_or_token, "logout")
        self._audit.record(AuditEvent("logout", actor, actor, "ok", {}))

    # -- administering ----------------------------------------------------------------------

    def _set_suspended(self, username: str, suspended: bool, actor: str) -> Account:
        account = self.get(username)
        if account.suspended == suspended:
            state = "suspended" if suspended else "active"
            raise InvalidInputError(f"account {account.username!r} is already {state}")
        with self._db.write() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == account.id)
                .values(
                    suspended=suspended,
                    chain_state=CHAIN_NONE if account.chain_state == CHAIN_NONE else CHAIN_PENDING,
                )
            )
        ended = self.sessions.end_user(account.id, "suspended") if suspended else 0
        kind = "user.suspended" if suspended else "user.reinstated"
        self._audit.record(
            AuditEvent(kind, actor, account.username, "ok", {"sessions_ended": ended})
        )
        return self.get(username)

    def suspend(self, username: str, actor: str) -> Account:
        """Suspend: every session and token ends now; on-chain ``suspendUser`` follows."""
        return self._set_suspended(username, True, actor)

    def reinstate(self, username: str, actor: str) -> Account:
        """Lift a suspension (on-chain ``reinstateUser`` follows)."""
        return self._set_suspended(username, False, actor)

    def recover(self, username: str, custodian: crypto.KeyPair, actor: str) -> Invitation:
        """The admin ceremony for a lost password or phone: the keys come back from their
        escrow (custodian key pair, i.e. the passphrase) under a new one-time link that sets
        a new password and TOTP secret. Old credentials, codes and sessions end now."""
        account = self.get(username)
        with self._db.read() as conn:
            escrow = conn.execute(
                select(users.c.keys_escrow).where(users.c.id == account.id)
            ).scalar_one()
        unlocked = keys.open_escrow(bytes(escrow), account.address, custodian)
        try:
            with self._db.write() as conn:
                conn.execute(
                    update(users)
                    .where(users.c.id == account.id)
                    .values(
                        password_hash=None,
                        keys_sealed=None,
                        totp_secret_sealed=None,
                        totp_last_step=-1,
                        enrolled_at=None,
                    )
                )
                conn.execute(delete(recovery_table).where(recovery_table.c.user_id == account.id))
            ended = self.sessions.end_user(account.id, "recovered")
            invitation = self._invite(account.id, account.username, unlocked, enrollment.RECOVER)
        finally:
            unlocked.wipe()
        self._audit.record(
            AuditEvent("user.recovered", actor, account.username, "ok", {"sessions_ended": ended})
        )
        return invitation

    def admin_enrolled(self) -> bool:
        """Whether any admin account has finished its enrollment."""
        with self._db.read() as conn:
            return bool(
                conn.execute(
                    select(func.count())
                    .select_from(users)
                    .where(users.c.role == Role.ADMIN.value, users.c.enrolled_at.is_not(None))
                ).scalar_one()
            )

    def first_admin_link(self, actor: str) -> Invitation | None:
        """On a fresh home: the account ``admin`` and its one-time link (shown once). None
        when an admin exists already (enrolled, or its link was shown at an earlier start:
        ``ztbridge user recover admin`` makes a new one with the custodian passphrase)."""
        with self._db.read() as conn:
            admins = conn.execute(
                select(func.count()).select_from(users).where(users.c.role == Role.ADMIN.value)
            ).scalar_one()
        if admins:
            return None
        try:
            return self.add("admin", Role.ADMIN, "First administrator", actor)
        except AccountExistsError:
            return None  # another process made it first (and showed its link)

    def live_sessions(self, username: str) -> int:
        """How many sessions and tokens of the account are live (for ``user show``)."""
        account = self.get(username)
        now = self._clock.now().isoformat()
        with self._db.read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(auth_sessions)
                    .where(
                        auth_sessions.c.user_id == account.id,
                        auth_sessions.c.ended_at.is_(None),
                        auth_sessions.c.expires_at > now,
                    )
                ).scalar_one()
            )
