"""Login cost with the default (OWASP) argon2id parameters: prints figures, never pass/fail.

What a login costs the server, step by step, on a real SQLite index: the password step
(one argon2id verification plus the argon2id derivation that unseals the account's keys), the
same step for an unknown user (the dummy hash: it should cost what a wrong password costs,
so timing tells nothing), the TOTP step (a conditional UPDATE), and a session check (what
every portal request pays).

Run::

    .venv/bin/python bench/accounts_login.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway import crypto
from gateway.accounts import totp
from gateway.accounts.errors import AuthenticationError
from gateway.accounts.users import Accounts
from gateway.audit import AuditLog
from gateway.clock import FixedClock
from gateway.index.database import Database
from gateway.index.sealing import IndexCipher
from gateway.keys import CustodianPublic
from gateway.settings import load_settings

PASSWORD = "correct horse battery staple"


def _ms(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clock = FixedClock(datetime(2026, 12, 2, 12, tzinfo=UTC))
        db = Database(
            f"sqlite:///{Path(tmp) / 'index.sqlite3'}", IndexCipher(secrets.token_bytes(32))
        )
        settings = load_settings(home=Path(tmp) / "home")
        pair = crypto.generate_keypair("x25519")
        accounts = Accounts(
            db, AuditLog(db, clock), clock, settings, CustodianPublic(pair.kem, pair.public)
        )
        a = settings.accounts
        print(
            f"argon2id m={a.argon2_memory_kib} KiB t={a.argon2_time_cost} p={a.argon2_parallelism}"
        )
        start = time.perf_counter()
        secret = accounts.provision("pat", "patient", "", PASSWORD, "bench").totp_secret
        print(
            f"provision (keys, escrow, hash, seal): {(time.perf_counter() - start) * 1000:.0f} ms"
        )

        def password_step() -> None:
            accounts.login_password("pat", PASSWORD, "127.0.0.1")

        counter = iter(range(1 << 30))

        def fresh_address() -> str:  # never throttled: the argon2 run is what is measured
            n = next(counter)
            return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"

        def wrong_password() -> None:
            with contextlib.suppress(AuthenticationError):
                accounts.login_password("pat", "not the password at all", fresh_address())

        def unknown_user() -> None:
            with contextlib.suppress(AuthenticationError):
                accounts.login_password("nobody", PASSWORD, fresh_address())

        for label, fn in [
            ("password step (verify + unseal keys)", password_step),
            ("wrong password", wrong_password),
            ("unknown user (dummy hash)", unknown_user),
        ]:
            median, worst = _ms(fn, args.rounds)
            print(f"{label}: median {median:.1f} ms, max {worst:.1f} ms")

        sessions: list[str] = []

        def totp_step() -> None:
            pending = accounts.login_password("pat", PASSWORD, "127.0.0.1")
            clock.advance(30)
            start = time.perf_counter()
            sessions.append(
                accounts.login_second_factor(
                    pending, totp.code_at(secret, clock.now()), "127.0.0.1"
                )
            )
            totp_times.append((time.perf_counter() - start) * 1000)

        totp_times: list[float] = []
        for _ in range(args.rounds):
            totp_step()
        totp_ms = statistics.median(totp_times)
        print(f"TOTP step (match + conditional UPDATE + rotation): median {totp_ms:.1f} ms")
        median, worst = _ms(lambda: accounts.sessions.check(sessions[-1]), args.rounds * 10)
        print(f"session check per request: median {median:.2f} ms, max {worst:.2f} ms")
        db.close()


if __name__ == "__main__":
    main()
