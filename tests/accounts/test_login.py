"""Logging in: one answer for every failure, throttling that never locks anyone out for
good, enrollment links (single use, 24 h), recovery codes, and the recovery ceremony."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.accounts import totp
from gateway.accounts.errors import (
    AccountExistsError,
    AuthenticationError,
    EnrollmentError,
    ThrottledError,
    WeakPasswordError,
)
from gateway.accounts.keys import open_with_password
from gateway.accounts.throttle import ThrottlePolicy
from gateway.errors import InvalidInputError
from gateway.index.models import users
from tests.accounts.conftest import PASSWORD, World

ATTACKER = "203.0.113.66"
VICTIM = "192.0.2.1"


def _fail(world: World, name: str, address: str) -> type[Exception]:
    try:
        world.accounts.login_password(name, "wrong password!!", address)
    except AuthenticationError as e:
        return type(e)
    raise AssertionError("a wrong password was accepted")


def test_unknown_user_wrong_password_and_suspended_get_one_answer(world: World) -> None:
    world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    world.accounts.provision("sus", "patient", "", PASSWORD, "t")
    world.accounts.suspend("sus", "t")
    world.accounts.add("new", "doctor", "", "t")  # invited, not enrolled
    answers = []
    for name, password in [
        ("nobody", PASSWORD),
        ("pat", "not the password"),
        ("sus", PASSWORD),
        ("new", PASSWORD),
        ("Bad Name!", PASSWORD),
    ]:
        with pytest.raises(AuthenticationError) as caught:
            world.accounts.login_password(name, password, VICTIM)
        answers.append((type(caught.value), str(caught.value)))
    assert len(set(answers)) == 1


def test_unknown_users_run_argon2_like_known_ones(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    runs: list[str] = []
    real = world.accounts.passwords._hasher

    class Counting:
        def verify(self, encoded: str, password: str) -> bool:
            runs.append(encoded[:9])
            return real.verify(encoded, password)

    monkeypatch.setattr(world.accounts.passwords, "_hasher", Counting())
    for name in ("nobody", "pat"):
        with pytest.raises(AuthenticationError):
            world.accounts.login_password(name, "not the password", VICTIM)
    assert runs == ["$argon2id", "$argon2id"]  # one argon2id verification each


def test_throttle_delays_grow_to_a_cap_and_never_lock_out(world: World) -> None:
    world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    policy = world.accounts.throttle.policy
    assert policy == ThrottlePolicy(3, 1.0, 300.0, 20)
    delays = [policy.delay(n, 3) for n in range(0, 14)]
    assert delays[:3] == [0, 0, 0] and delays[3:6] == [1, 2, 4] and max(delays) == 300
    for _ in range(3):
        assert _fail(world, "pat", ATTACKER) is AuthenticationError
    with pytest.raises(ThrottledError) as caught:
        world.accounts.login_password("pat", PASSWORD, ATTACKER)  # even the right password
    assert 0 < caught.value.retry_after <= 1
    # The victim, from their own address, is not slowed by the attacker's failures.
    assert world.accounts.login_password("pat", PASSWORD, VICTIM)
    # However long the attack goes on, the wait stays capped: never a permanent lockout.
    for _ in range(40):
        world.clock.advance(301)
        _fail(world, "pat", ATTACKER)
    with pytest.raises(ThrottledError) as caught:
        world.accounts.login_password("pat", PASSWORD, ATTACKER)
    assert caught.value.retry_after <= 300
    world.clock.advance(300)
    assert world.accounts.login_password("pat", PASSWORD, ATTACKER)


def test_an_address_guessing_many_accounts_is_slowed(world: World) -> None:
    for i in range(20):
        _fail(world, f"user{i}", ATTACKER)  # unknown users count like known ones
    with pytest.raises(ThrottledError):
        world.accounts.login_password("user99", PASSWORD, ATTACKER)
    world.clock.advance(2)
    _fail(world, "user99", ATTACKER)


def test_wrong_totp_codes_are_throttled_too(world: World) -> None:
    secret = world.accounts.provision("pat", "patient", "", PASSWORD, "t").totp_secret
    pending = world.accounts.login_password("pat", PASSWORD, ATTACKER)
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            world.accounts.login_second_factor(pending, "000000", ATTACKER)
    with pytest.raises(ThrottledError):
        world.accounts.login_second_factor(
            pending, totp.code_at(secret, world.clock.now()), ATTACKER
        )


def test_enrollment_link_single_use_and_expiry(world: World) -> None:
    invitation = world.accounts.add("doc", "doctor", "Dr Doc", "cli:admin")
    assert invitation.url == f"https://localhost:8443/enroll/{invitation.token}"
    offer = world.accounts.offer(invitation.token)
    assert (
        offer.username == "doc"
        and offer.totp_secret == world.accounts.offer(invitation.token).totp_secret
    )
    with pytest.raises(WeakPasswordError):
        world.accounts.enroll(
            invitation.token, "password1234", totp.code_at(offer.totp_secret, world.clock.now())
        )
    with pytest.raises(EnrollmentError, match="code"):
        world.accounts.enroll(invitation.token, PASSWORD, "123456")
    codes = world.accounts.enroll(
        invitation.token, PASSWORD, totp.code_at(offer.totp_secret, world.clock.now())
    )
    assert len(codes) == 10 and len(set(codes)) == 10
    with pytest.raises(EnrollmentError, match="already used"):
        world.accounts.offer(invitation.token)
    with pytest.raises(EnrollmentError):
        world.accounts.enroll(
            invitation.token, PASSWORD, totp.code_at(offer.totp_secret, world.clock.now())
        )
    # the first code was accepted at enrollment: it cannot log in again
    pending = world.accounts.login_password("doc", PASSWORD, VICTIM)
    with pytest.raises(AuthenticationError):
        world.accounts.login_second_factor(
            pending, totp.code_at(offer.totp_secret, world.clock.now()), VICTIM
        )
    world.clock.advance(30)
    assert world.accounts.login_second_factor(
        pending, totp.code_at(offer.totp_secret, world.clock.now()), VICTIM
    )


def test_an_enrollment_link_expires_after_24_hours(world: World) -> None:
    invitation = world.accounts.add("doc", "doctor", "", "t")
    world.clock.advance(24 * 3600 - 1)
    secret = world.accounts.offer(invitation.token).totp_secret
    world.clock.advance(1)
    with pytest.raises(EnrollmentError, match="expired"):
        world.accounts.enroll(invitation.token, PASSWORD, totp.code_at(secret, world.clock.now()))


def test_recovery_codes_work_once(world: World) -> None:
    done = world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    code = done.recovery_codes[3]
    pending = world.accounts.login_password("pat", PASSWORD, VICTIM)
    assert world.accounts.login_second_factor(pending, code.lower(), VICTIM)
    pending = world.accounts.login_password("pat", PASSWORD, VICTIM)
    with pytest.raises(AuthenticationError):
        world.accounts.login_second_factor(pending, code, VICTIM)


def test_recovery_restores_the_same_keys_under_a_new_password(world: World) -> None:
    done = world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    pending = world.accounts.login_password("pat", PASSWORD, VICTIM)
    session = world.accounts.login_second_factor(
        pending, totp.code_at(done.totp_secret, world.clock.now()), VICTIM
    )
    invitation = world.accounts.recover("pat", world.custodian, "cli:admin")
    with pytest.raises(Exception):  # noqa: B017 - the old session ended
        world.accounts.sessions.check(session)
    with pytest.raises(AuthenticationError):  # the old password is void
        world.accounts.login_password("pat", PASSWORD, VICTIM)
    secret = world.accounts.offer(invitation.token).totp_secret
    assert secret != done.totp_secret
    world.accounts.enroll(
        invitation.token, "a brand new passphrase", totp.code_at(secret, world.clock.now())
    )
    with world.db.read() as conn:
        blob = conn.execute(users.select().where(users.c.username == "pat")).first().keys_sealed
    keys = open_with_password(bytes(blob), "a brand new passphrase")
    assert keys.address == done.account.address and keys.hpke_public == done.account.hpke_public
    world.clock.advance(30)
    pending = world.accounts.login_password("pat", "a brand new passphrase", VICTIM)
    assert world.accounts.login_second_factor(
        pending, totp.code_at(secret, world.clock.now()), VICTIM
    )
    kinds = [e.kind for e in world.audit.entries()]
    assert kinds.index("user.recovered") < kinds.index("user.enrolled")


def test_secrets_are_never_in_the_audit_log(world: World) -> None:
    done = world.accounts.provision("pat", "patient", "", PASSWORD, "t")
    invitation = world.accounts.add("doc", "doctor", "", "t")
    with pytest.raises(AuthenticationError):
        world.accounts.login_password("pat", "a wrong guess!!", VICTIM)
    with pytest.raises(AuthenticationError):  # a password typed into the username field
        world.accounts.login_password("my-secret-typed-here", PASSWORD, VICTIM)
    text = "\n".join(f"{e.actor} {e.subject} {e.detail}" for e in world.audit.entries())
    for secret in (
        PASSWORD,
        "a wrong guess!!",
        done.totp_secret,
        invitation.token,
        *done.recovery_codes,
    ):
        assert secret not in text


def test_bad_input_is_named(world: World) -> None:
    with pytest.raises(InvalidInputError, match="unknown role"):
        world.accounts.add("x1", "nurse", "", "t")
    with pytest.raises(InvalidInputError, match="username"):
        world.accounts.add("-x", "doctor", "", "t")
    world.accounts.add("doc", "doctor", "", "t")
    with pytest.raises(AccountExistsError):
        world.accounts.add("DOC", "doctor", "", "t")


def test_first_admin_link_only_on_a_fresh_home(world: World) -> None:
    first = world.accounts.first_admin_link("ztbridge up")
    assert first is not None and first.username == "admin"
    assert world.accounts.first_admin_link("ztbridge up") is None
    assert not world.accounts.admin_enrolled()
    secret = world.accounts.offer(first.token).totp_secret
    world.accounts.enroll(first.token, PASSWORD, totp.code_at(secret, world.clock.now()))
    assert world.accounts.admin_enrolled()
    world.clock.advance(timedelta(hours=1).total_seconds())
