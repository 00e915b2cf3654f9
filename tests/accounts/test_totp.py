"""TOTP: ±1 step, and a code (or any earlier step) is never accepted twice, even at once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from gateway.accounts import totp
from gateway.accounts.errors import AuthenticationError
from tests.accounts.conftest import PASSWORD, World

ADDRESS = "192.0.2.10"


def _user(world: World, name: str = "pat") -> str:
    return world.accounts.provision(name, "patient", "Pat", PASSWORD, "test").totp_secret


def _try(world: World, secret: str, offset_steps: int, name: str = "pat") -> bool:
    pending = world.accounts.login_password(name, PASSWORD, ADDRESS)
    when = world.clock.now() + timedelta(seconds=30 * offset_steps)
    try:
        world.accounts.login_second_factor(pending, totp.code_at(secret, when), ADDRESS)
    except AuthenticationError:
        return False
    return True


# (case, codes submitted as step offsets from now, expected outcome of each)
CASES = [
    ("current", [0], [True]),
    ("previous step (clock skew)", [-1], [True]),
    ("next step (clock skew)", [1], [True]),
    ("two steps off", [2], [False]),
    ("replay of the same code", [0, 0], [True, False]),
    ("earlier step after a later one", [0, -1], [True, False]),
    ("later step after an earlier one", [-1, 0], [True, True]),
    ("current after next was accepted", [1, 0], [True, False]),
]


@pytest.mark.parametrize(("case", "offsets", "expected"), CASES, ids=[c[0] for c in CASES])
def test_totp_steps(world: World, case: str, offsets: list[int], expected: list[bool]) -> None:
    secret = _user(world)
    assert [_try(world, secret, o) for o in offsets] == expected


def test_a_code_of_a_new_step_is_accepted_after_time_moves(world: World) -> None:
    secret = _user(world)
    assert _try(world, secret, 0)
    world.clock.advance(30)
    assert _try(world, secret, 0)


def test_not_six_digits_is_refused_without_a_match(world: World) -> None:
    secret = _user(world)
    assert totp.matching_step(secret, "12345", world.clock.now(), 1) is None
    assert totp.matching_step(secret, "abcdef", world.clock.now(), 1) is None
    assert totp.matching_step(secret, totp.code_at(secret, world.clock.now()), world.clock.now(), 1)


def test_two_concurrent_submissions_of_one_code_exactly_one_wins(world: World) -> None:
    secret = _user(world)
    code = totp.code_at(secret, world.clock.now())
    other = world.fresh_accounts()  # a second gateway process on the same index
    pendings = [
        world.accounts.login_password("pat", PASSWORD, ADDRESS),
        other.login_password("pat", PASSWORD, ADDRESS),
    ]
    services = [world.accounts, other]
    start = threading.Barrier(2)
    results: list[str] = []

    def submit(i: int) -> None:
        start.wait()
        try:
            services[i].login_second_factor(pendings[i], code, ADDRESS)
            results.append("won")
        except AuthenticationError:
            results.append("refused")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused", "won"]


def test_the_conditional_update_has_one_winner_per_step(world: World) -> None:
    account = world.accounts.provision("pat", "patient", "", PASSWORD, "test").account
    step = totp.matching_step(
        _secret := world.accounts.provision("doc", "doctor", "", PASSWORD, "t").totp_secret,
        totp.code_at(_secret, world.clock.now()),
        world.clock.now(),
        1,
    )
    assert step is not None
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def race() -> None:
        barrier.wait()
        wins.append(totp.accept_step(world.db, account.id, step))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1 and len(wins) == 8
    assert not totp.accept_step(world.db, account.id, step - 1)
    assert totp.accept_step(world.db, account.id, step + 1)


def test_enrollment_qr_is_inline_svg(world: World) -> None:
    uri = totp.provisioning_uri(totp.new_secret(), "pat", "ztbridge")
    assert uri.startswith("otpauth://totp/ztbridge:pat?")
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and "<script" not in svg
