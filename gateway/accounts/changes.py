"""A user changes their own password or TOTP secret (the Account page, ``POST
/api/account/password``).

Both ask for the current password and a fresh second-factor code again
(``Accounts.reauthenticate``: the checks, throttle and audit of a login; a code accepted once
is refused after), so a session left open on a shared screen cannot change the credentials.

* Password: the private keys the current password opens are sealed again under the new one
  (argon2id, a fresh salt). The keys themselves do not change: every key wrap, every share
  and the escrow to the custodian stay valid. Every other session and token of the user ends
  (the one that asked stays).
* TOTP: a new secret is offered (shown once, QR code and text) and replaces the old one only
  when a first code of it is confirmed. Between the two requests the offer travels as a
  ticket sealed under the index key, bound to the account and the asking session's family
  and valid for ``TICKET_MINUTES``, so nothing is stored and no other session can finish it.

Audited (``user.password-changed``, ``user.totp-changed``), never with a secret in the event.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.accounts import totp
from gateway.accounts.passwords import check_new_password
from gateway.accounts.sessions import SessionView
from gateway.accounts.users import Accounts
from gateway.audit import AuditEvent, AuditLog
from gateway.errors import InvalidEnvelopeError, InvalidInputError

TICKET_MINUTES = 10
_TABLE, _COLUMN = "users", "totp_pending"


@dataclass(frozen=True)
class TotpOffer:
    """A new TOTP secret to confirm: shown once, with the ticket that finishes the change."""

    secret: str
    uri: str
    qr_svg: str
    ticket: str
    expires_at: str


def change_password(
    accounts: Accounts,
    audit: AuditLog,
    who: SessionView,
    current: str,
    code: str,
    new: str,
    address: str,
) -> int:
    """Re-seal the user's keys under ``new``; end every other session and token. Returns how
    many ended. AuthenticationError / ThrottledError for a wrong password or code,
    InvalidInputError for a weak new password."""
    check_new_password(new, accounts.settings.accounts.password_min_length)
    if new == current:
        raise InvalidInputError("the new password is the current one: choose another")
    unlocked = accounts.reauthenticate(who.username, current, code, address)
    try:
        accounts.store_password(who.user_id, unlocked, new)
    finally:
        unlocked.wipe()
    ended = accounts.sessions.end_others(who.user_id, who.family, "password-changed")
    audit.record(
        AuditEvent(
            "user.password-changed",
            who.username,
            who.username,
            "ok",
            {"sessions_ended": ended, "address": address},
        )
    )
    return ended


def _ticket_row(who: SessionView) -> str:
    return f"{who.user_id}:{who.family}"


def begin_totp_change(
    accounts: Accounts,
    who: SessionView,
    password: str,
    code: str,
    address: str,
    now: datetime,
) -> TotpOffer:
    """The password and a current code again, then a new secret to scan (not yet in use)."""
    accounts.reauthenticate(who.username, password, code, address).wipe()
    secret = totp.new_secret()
    expires = now + timedelta(minutes=TICKET_MINUTES)
    body = json.dumps({"secret": secret, "expires": expires.isoformat()}).encode()
    sealed = accounts.cipher.seal(_TABLE, _COLUMN, _ticket_row(who), body)
    uri = totp.provisioning_uri(secret, who.username, accounts.settings.accounts.totp_issuer)
    return TotpOffer(
        secret,
        uri,
        totp.qr_svg(uri),
        base64.urlsafe_b64encode(sealed).decode(),
        expires.isoformat(),
    )


def _open_ticket(accounts: Accounts, who: SessionView, ticket: str, now: datetime) -> str:
    again = "start the TOTP change again from the Account page"
    try:
        sealed = base64.urlsafe_b64decode(ticket.encode())
        doc = json.loads(accounts.cipher.open(_TABLE, _COLUMN, _ticket_row(who), sealed))
        secret, expires = str(doc["secret"]), datetime.fromisoformat(doc["expires"])
    except (InvalidEnvelopeError, binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidInputError(
            f"this TOTP change is not valid for this session: {again}"
        ) from None
    if now >= expires:
        raise InvalidInputError(f"this TOTP change expired ({TICKET_MINUTES} minutes): {again}")
    return secret


def confirm_totp_change(
    accounts: Accounts,
    audit: AuditLog,
    who: SessionView,
    ticket: str,
    code: str,
    now: datetime,
) -> None:
    """Replace the TOTP secret with the offered one, once a code of it matches."""
    secret = _open_ticket(accounts, who, ticket, now)
    step = totp.matching_step(secret, code, now, accounts.settings.accounts.totp_valid_window)
    if step is None:
        raise InvalidInputError(
            "the code does not match the new secret; check the phone's clock and enter the"
            " current code of the new entry"
        )
    accounts.store_totp(who.user_id, secret, step)
    audit.record(AuditEvent("user.totp-changed", who.username, who.username, "ok", {}))
