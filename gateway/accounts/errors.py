"""The account errors: what a login, an enrollment or an admin command can be refused for."""

from __future__ import annotations

from gateway.errors import InvalidInputError, NotFoundError, ZtbridgeError


class AuthenticationError(ZtbridgeError):
    """A login step failed. One message for every cause (unknown user, wrong password, wrong
    or replayed code, suspended account), so an answer never tells which it was."""

    def __init__(self) -> None:
        super().__init__("the username, password or code is not right")


class ThrottledError(AuthenticationError):
    """Too many failed attempts from here: wait ``retry_after`` seconds (never forever)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after
        self.args = (f"too many failed attempts; try again in {retry_after:.0f} s",)


class SessionError(ZtbridgeError):
    """A session or token is unknown, expired, ended, or belongs to a suspended account."""


class RefreshReuseError(SessionError):
    """A refresh token was used twice: its whole family has been revoked."""


class WeakPasswordError(InvalidInputError):
    """A password is too short or too common; the message says which and what to do."""


class EnrollmentError(InvalidInputError):
    """An enrollment link is unknown, expired or already used, or its first code is wrong."""


class AccountExistsError(InvalidInputError):
    """The username (or Patient ID link) is taken."""


class UnknownAccountError(NotFoundError):
    """No account by that name."""
