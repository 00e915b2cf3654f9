"""``ztbridge user ...``: patient, doctor and staff accounts.

Thin: every command is one call into ``gateway.accounts`` (the portal's admin pages call the
same). No secret is ever printed except what the command exists to hand over once: the
enrollment link, or with ``--totp-secret-file`` the TOTP secret (to that file, owner-only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ztbridge.cli.console import actor, err, fail, out
from ztbridge.cli.context import custodian_passphrase, gateway

if TYPE_CHECKING:
    from gateway.accounts.users import Account
    from gateway.service import Gateway

app = typer.Typer(help="Accounts of patients, doctors and staff (password + TOTP).")


def _state(a: Account) -> str:
    if a.suspended:
        return "suspended"
    return "active" if a.enrolled else "invited (not enrolled)"


def _sync(gw: Gateway) -> None:
    """Carry account changes to the registry now if this command can take the ledger."""
    from gateway.accounts.onchain import sync_now

    if gw.anchoring is None:
        return
    if sync_now(gw.anchoring):
        out.print("registry: up to date", highlight=False)
    else:
        out.print(
            "registry: the running 'ztbridge up' holds the ledger and carries the change"
            " there within seconds",
            highlight=False,
        )


def _read_password(path: Path) -> str:
    try:
        text = path.read_text()
    except OSError as e:
        raise fail(f"cannot read the password file {path}: {e.strerror}") from None
    return text.rstrip("\r\n")


@app.command("add")
def user_add(
    username: Annotated[str, typer.Option("--username", help="login name")],
    role: Annotated[
        str, typer.Option("--role", help="admin, technologist, patient, doctor or auditor")
    ],
    name: Annotated[str, typer.Option("--name", help="the person's name, as shown")] = "",
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="scripted: set the password from this file"),
    ] = None,
    totp_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--totp-secret-file",
            help="scripted: write the base32 TOTP secret here (owner-only, never overwritten)",
        ),
    ] = None,
) -> None:
    """Create an account with its own keys; print its one-time enrollment link (24 h), or,
    with --password-file and --totp-secret-file, provision it completely."""
    from gateway.durable import create_file

    if (password_file is None) != (totp_secret_file is None):
        raise fail("--password-file and --totp-secret-file go together (or give neither)")
    if totp_secret_file is not None and (
        totp_secret_file.exists() or totp_secret_file.is_symlink()
    ):
        raise fail(f"{totp_secret_file} exists; name a new file for the TOTP secret")
    password = _read_password(password_file) if password_file is not None else None
    with gateway("read", create=True) as gw:
        if password is None:
            invitation = gw.users.add(username, role, name, actor())
            out.print(
                f"account {escape(invitation.username)} ({role}) created. Its one-time"
                f" enrollment link (valid until {invitation.expires_at}):\n\n"
                f"    {invitation.url}\n",
                highlight=False,
            )
        else:
            assert totp_secret_file is not None
            done = gw.users.provision(username, role, name, password, actor())
            if not create_file(totp_secret_file, (done.totp_secret + "\n").encode()):
                raise fail(
                    f"{totp_secret_file} appeared meanwhile; the account exists: run"
                    f" 'ztbridge user recover {done.account.username}' for new credentials"
                )
            out.print(
                f"account {escape(done.account.username)} ({role}) provisioned; TOTP secret"
                f" written to {totp_secret_file}. Recovery codes (shown once, each works"
                " once instead of a TOTP code):",
                highlight=False,
            )
            for code in done.recovery_codes:
                out.print(f"    {code}", highlight=False)
        _sync(gw)


@app.command("list")
def user_list() -> None:
    """Every account: name, role, state, registry account."""
    with gateway("read") as gw:
        accounts = gw.users.all()
    if not accounts:
        out.print("no accounts yet ('ztbridge user add --username U --role R')")
        return
    table = Table("username", "role", "name", "state", "address", "registry")
    for a in accounts:
        table.add_row(
            escape(a.username),
            a.role.value,
            escape(a.display_name),
            _state(a),
            a.address,
            a.chain_state,
        )
    out.print(table)


@app.command("show")
def user_show(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """One account in detail (never its secrets)."""
    with gateway("read") as gw:
        a = gw.users.get(username)
        links = gw.patient_links.of(a.id)
        live = gw.users.live_sessions(username)
    out.print(f"username:   {escape(a.username)}", highlight=False)
    out.print(f"role:       {a.role.value}", highlight=False)
    out.print(f"name:       {escape(a.display_name)}", highlight=False)
    out.print(f"state:      {_state(a)}", highlight=False)
    out.print(f"address:    {a.address}  (registry: {a.chain_state})", highlight=False)
    out.print(f"HPKE key:   {a.kem} {a.hpke_public.hex()[:16]}…", highlight=False)
    out.print(f"created:    {a.created_at}", highlight=False)
    out.print(f"enrolled:   {a.enrolled_at or '-'}", highlight=False)
    out.print(f"sessions:   {live} live", highlight=False)
    for link in links:
        issuer = f" (issuer {escape(link.issuer)})" if link.issuer else " (any issuer)"
        out.print(f"patient ID: {escape(link.patient_id)}{issuer}", highlight=False)


@app.command("suspend")
def user_suspend(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Suspend an account: its sessions and tokens end now; suspendUser on the registry."""
    with gateway("read") as gw:
        a = gw.users.suspend(username, actor())
        out.print(f"{escape(a.username)} is suspended; its sessions ended", highlight=False)
        _sync(gw)


@app.command("reinstate")
def user_reinstate(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Lift a suspension (reinstateUser on the registry)."""
    with gateway("read") as gw:
        a = gw.users.reinstate(username, actor())
        out.print(f"{escape(a.username)} is active again", highlight=False)
        _sync(gw)


@app.command("recover")
def user_recover(username: Annotated[str, typer.Argument(help="login name")]) -> None:
    """Lost password or phone: the account's keys come back from the custodian escrow under a
    new one-time link that sets a new password and TOTP secret; old sessions end.

    Needs ZTBRIDGE_CUSTODIAN_PASSPHRASE (an admin ceremony; audited)."""
    from gateway.accounts.ceremonies import recover_account

    with gateway("read") as gw:
        invitation = recover_account(gw, username, custodian_passphrase(gw), actor())
    out.print(
        f"{escape(invitation.username)}: old password, TOTP secret, recovery codes and sessions"
        f" are void. New one-time link (valid until {invitation.expires_at}):\n\n"
        f"    {invitation.url}\n",
        highlight=False,
    )
    err.print("hand the link to the user over a channel you trust", highlight=False)
