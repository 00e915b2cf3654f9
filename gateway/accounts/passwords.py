"""Passwords: argon2id hashes (argon2-cffi) and the rules a new password must meet.

Rules (OWASP ASVS 5.0 V6.2): at least ``password_min_length`` characters (12 by default, never
fewer), any characters, no composition rules, and not one of the 30,000 most common passwords.
The list is the one zxcvbn ships (``zxcvbn.frequency_lists``, ranked from leaked-password
corpora), so it is kept by that project rather than by us; matching is case-insensitive and
also catches a common password padded with digits or punctuation to reach the length.

Parameters come from settings: OWASP's recommended argon2id (m=19 MiB, t=2, p=1) by default;
tests set cheap ones. A hash records its own parameters, so old hashes keep verifying after a
change, and ``needs_rehash`` says when to upgrade one at the next login.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.accounts.errors import WeakPasswordError

MAX_PASSWORD_CHARS = 1024  # argon2 takes any length; this bounds the work a request can ask


@dataclass(frozen=True)
class Argon2Params:
    """argon2id cost: memory in KiB, iterations, lanes."""

    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1


@cache
def _common() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


_PADDING = re.compile(r"^(.*?)[\d\W_]*$")


def is_common(password: str) -> bool:
    """Whether ``password`` is on the list in any case, or is a listed one with up to four
    characters, or any digits and punctuation, appended to reach the length."""
    low = password.lower()
    common = _common()
    stripped = _PADDING.match(low)
    core = stripped.group(1) if stripped else low
    if low in common or (len(core) >= 4 and core in common):
        return True
    return any(low[:-k] in common for k in range(1, min(4, len(low) - 4) + 1))


def check_new_password(password: str, min_length: int = 12) -> None:
    """Raise WeakPasswordError (saying what to change) unless ``password`` may be used."""
    if len(password) < min_length:
        raise WeakPasswordError(
            f"the password has {len(password)} characters; use at least {min_length}"
            " (a few unrelated words make a good one)"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise WeakPasswordError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    if is_common(password):
        raise WeakPasswordError(
            "the password is on the list of commonly used passwords; choose another"
        )


class Passwords:
    """Hash and verify passwords with one set of argon2id parameters."""

    def __init__(self, params: Argon2Params) -> None:
        self.params = params
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
        )
        # Verified against when the account does not exist, so that an unknown username
        # costs the same argon2 run as a wrong password (no user enumeration by timing).
        self._dummy = self._hasher.hash("ztbridge dummy password for unknown users")

    def hash(self, password: str) -> str:
        """An argon2id PHC string (salt and parameters included)."""
        return self._hasher.hash(password)

    def verify(self, encoded: str | None, password: str) -> bool:
        """Whether ``password`` matches; ``encoded`` None runs the dummy check and says no."""
        if len(password) > MAX_PASSWORD_CHARS:
            password = password[:MAX_PASSWORD_CHARS]  # still one argon2 run, still a no
            encoded = None
        try:
            ok = self._hasher.verify(encoded or self._dummy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return ok and encoded is not None

    def needs_rehash(self, encoded: str) -> bool:
        """Whether a stored hash was made with other parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(encoded)
        except InvalidHashError:
            return True
