"""Password rules (length, common passwords) and argon2id with OWASP's parameters."""

from __future__ import annotations

import pytest
from argon2 import extract_parameters

from gateway.accounts.errors import WeakPasswordError
from gateway.accounts.passwords import Argon2Params, Passwords, check_new_password, is_common
from gateway.settings import load_settings

CASES = [
    ("short", "Tr0ub4dor&3", False),  # 11 characters
    ("exactly twelve", "plum-ocean-7", True),
    ("common", "password1234", False),  # on the list as is
    ("common, any case", "PASSWORD1234", False),
    ("common word padded", "sunshine!!!!!!", False),
    ("common number", "123456789012", False),
    ("passphrase", "correct horse battery staple", True),
    ("unicode", "über-straße-café", True),
]


@pytest.mark.parametrize(("case", "password", "ok"), CASES, ids=[c[0] for c in CASES])
def test_new_password_rules(case: str, password: str, ok: bool) -> None:
    if ok:
        check_new_password(password)
    else:
        with pytest.raises(WeakPasswordError):
            check_new_password(password)


def test_the_minimum_length_setting_cannot_go_below_twelve() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="password_min_length"):
        load_settings(accounts={"password_min_length": 8})


def test_common_list_is_the_shipped_one() -> None:
    assert is_common("qwerty") and is_common("iloveyou") and not is_common("vq8#Lm2!zR4p")


def test_defaults_are_owasp_argon2id() -> None:
    a = load_settings().accounts
    assert (a.argon2_memory_kib, a.argon2_time_cost, a.argon2_parallelism) == (19456, 2, 1)
    encoded = Passwords(Argon2Params(a.argon2_memory_kib, a.argon2_time_cost, 1)).hash("x" * 12)
    p = extract_parameters(encoded)
    assert encoded.startswith("$argon2id$")
    assert (p.memory_cost, p.time_cost, p.parallelism) == (19456, 2, 1)


def test_verify_and_unknown_user() -> None:
    pw = Passwords(Argon2Params(8, 1, 1))
    h = pw.hash("plum-ocean-77")
    assert pw.verify(h, "plum-ocean-77")
    assert not pw.verify(h, "plum-ocean-78")
    assert not pw.verify(None, "plum-ocean-77")  # runs the dummy hash, always no
    assert not pw.verify(None, "ztbridge dummy password for unknown users")
    assert pw.needs_rehash(h) is False
    assert Passwords(Argon2Params(16, 1, 1)).needs_rehash(h)
