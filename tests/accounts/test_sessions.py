"""Sessions and tokens on the server: rotation, idle and absolute timeouts, refresh-token
families, logout, suspension and recovery ending everything, keys wiped with them."""

from __future__ import annotations

import pytest

from gateway.accounts import totp
from gateway.accounts.errors import AuthenticationError, RefreshReuseError, SessionError
from gateway.accounts.keyprovider import key_provider
from tests.accounts.conftest import PASSWORD, World

ADDR = "198.51.100.7"


def _login(world: World, name: str = "pat") -> tuple[str, str]:
    """(secret, full session id) of a fresh account."""
    secret = world.accounts.provision(name, "patient", "", PASSWORD, "t").totp_secret
    pending = world.accounts.login_password(name, PASSWORD, ADDR)
    session = world.accounts.login_second_factor(
        pending, totp.code_at(secret, world.clock.now()), ADDR
    )
    return secret, session


def test_the_id_rotates_at_the_password_step_and_after_totp(world: World) -> None:
    secret = world.accounts.provision("pat", "patient", "", PASSWORD, "t").totp_secret
    before = world.accounts.login_password("pat", PASSWORD, ADDR)  # an earlier login
    pending = world.accounts.login_password("pat", PASSWORD, ADDR, previous_session=before)
    assert pending != before
    with pytest.raises(SessionError):
        world.accounts.sessions.check(before, allow_pending=True)  # ended by the rotation
    with pytest.raises(SessionError, match="second factor"):
        world.accounts.sessions.check(pending)  # password alone is not a login
    full = world.accounts.login_second_factor(
        pending, totp.code_at(secret, world.clock.now()), ADDR
    )
    assert full != pending
    with pytest.raises(SessionError):
        world.accounts.sessions.check(pending, allow_pending=True)
    view = world.accounts.sessions.check(full)
    assert view.complete and view.username == "pat" and view.keys is not None


def test_pending_session_expires(world: World) -> None:
    secret = world.accounts.provision("pat", "patient", "", PASSWORD, "t").totp_secret
    pending = world.accounts.login_password("pat", PASSWORD, ADDR)
    world.clock.advance(5 * 60 + 1)
    with pytest.raises(AuthenticationError):
        world.accounts.login_second_factor(pending, totp.code_at(secret, world.clock.now()), ADDR)


def test_idle_timeout(world: World) -> None:
    _, session = _login(world)
    keys = world.accounts.sessions.check(session).keys
    world.clock.advance(14 * 60)
    world.accounts.sessions.check(session)  # activity moves the idle timer
    world.clock.advance(14 * 60)
    world.accounts.sessions.check(session)
    world.clock.advance(15 * 60)
    with pytest.raises(SessionError, match="idle"):
        world.accounts.sessions.check(session)
    assert keys is not None and keys.wiped
    with pytest.raises(SessionError):
        world.accounts.sessions.check(session)


def test_absolute_timeout_despite_activity(world: World) -> None:
    _, session = _login(world)
    for _ in range(8 * 6 - 1):  # every 10 minutes for 7 h 50 min
        world.clock.advance(10 * 60)
        world.accounts.sessions.check(session)
    world.clock.advance(10 * 60)
    with pytest.raises(SessionError, match="expired"):
        world.accounts.sessions.check(session)


def test_timeouts_are_settings(world: World) -> None:
    s = world.settings.sessions
    assert (s.idle_minutes, s.absolute_hours) == (15.0, 8.0)
    policy = world.accounts.sessions.policy
    assert policy.idle.total_seconds() == 900 and policy.absolute.total_seconds() == 8 * 3600


def _tokens(world: World, name: str = "pat") -> tuple[str, object]:
    secret = world.accounts.provision(name, "patient", "", PASSWORD, "t").totp_secret
    pair = world.accounts.login_token(name, PASSWORD, totp.code_at(secret, world.clock.now()), ADDR)
    return secret, pair


def test_access_tokens_last_minutes_and_refresh_rotates(world: World) -> None:
    _, pair = _tokens(world)
    sessions = world.accounts.sessions
    assert pair.token_type == "Bearer" and pair.expires_in == 300  # type: ignore[attr-defined]
    assert sessions.check(pair.access_token).keys is not None  # type: ignore[attr-defined]
    world.clock.advance(301)
    with pytest.raises(SessionError):
        sessions.check(pair.access_token)  # type: ignore[attr-defined]
    new = sessions.refresh(pair.refresh_token)  # type: ignore[attr-defined]
    assert new.refresh_token != pair.refresh_token  # type: ignore[attr-defined]
    view = sessions.check(new.access_token)
    assert view.keys is not None and not view.keys.wiped  # the keys survived the rotation


def test_a_reused_refresh_token_revokes_the_family(world: World) -> None:
    _, pair = _tokens(world)
    sessions = world.accounts.sessions
    new = sessions.refresh(pair.refresh_token)  # type: ignore[attr-defined]
    keys = sessions.check(new.access_token).keys
    with pytest.raises(RefreshReuseError):
        sessions.refresh(pair.refresh_token)  # type: ignore[attr-defined]
    for token in (new.access_token, new.refresh_token):
        with pytest.raises(SessionError):
            sessions.check(token)
    with pytest.raises(SessionError):
        sessions.refresh(new.refresh_token)
    assert keys is not None and keys.wiped


def test_logout_ends_the_session_and_wipes_its_keys(world: World) -> None:
    _, session = _login(world)
    keys = world.accounts.sessions.check(session).keys
    world.accounts.logout(session, "pat")
    with pytest.raises(SessionError):
        world.accounts.sessions.check(session)
    assert keys is not None and keys.wiped


def test_suspension_ends_every_session_and_token_at_once(world: World) -> None:
    secret, session = _login(world)
    world.clock.advance(30)
    pair = world.accounts.login_token(
        "pat", PASSWORD, totp.code_at(secret, world.clock.now()), ADDR
    )
    view = world.accounts.sessions.check(session)
    provider = key_provider(world.db, view)
    # suspended by another process (the CLI) on the same index:
    world.fresh_accounts().suspend("pat", "cli:admin")
    for opaque in (session, pair.access_token, pair.refresh_token):
        with pytest.raises(SessionError):
            world.accounts.sessions.check(opaque)
    assert view.keys is not None and view.keys.wiped
    with pytest.raises(Exception):  # noqa: B017 - the wiped key cannot open anything
        provider._keys.hpke_pair()
    world.clock.advance(30)
    with pytest.raises(AuthenticationError):  # and a new login is refused like a wrong one
        world.accounts.login_password("pat", PASSWORD, ADDR)
    world.accounts.reinstate("pat", "cli:admin")
    assert world.accounts.login_password("pat", PASSWORD, ADDR)


def test_a_session_without_its_keys_in_this_process_is_over(world: World) -> None:
    _, session = _login(world)
    with pytest.raises(SessionError, match="keys-gone"):
        world.fresh_accounts().sessions.check(session)  # e.g. after a restart
