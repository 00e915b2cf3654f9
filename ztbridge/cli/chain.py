"""``ztbridge chain deploy|info|drain``: the ledger from the command line."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gateway.errors import ZtbridgeError
from ztbridge.cli.console import actor, fail, out
from ztbridge.cli.context import gateway

if TYPE_CHECKING:
    from gateway.anchoring.service import Anchoring
    from gateway.service import Gateway

app = typer.Typer(help="The ledger: the registry contract and the anchoring outbox.")

ETH = 10**18


def anchoring_of(gw: Gateway) -> Anchoring:
    """The gateway's anchoring, or a clean exit when the ledger is turned off."""
    if gw.anchoring is None:
        raise fail("the ledger is turned off ([ledger] enabled = false, ZTBRIDGE_LEDGER__ENABLED)")
    return gw.anchoring


@app.command("deploy")
def chain_deploy(
    rpc: Annotated[
        str | None,
        typer.Option("--rpc", help="JSON-RPC URL of the node; without it: the embedded chain"),
    ] = None,
    funder_key: Annotated[
        str | None,
        typer.Option(
            "--funder-key",
            envvar="ZTBRIDGE_FUNDER_KEY",
            help="private key (hex) of a funded account that pays the gateway's accounts",
            show_default=False,
        ),
    ] = None,
    fund_eth: Annotated[
        float, typer.Option("--fund-eth", help="ETH the funder sends each gateway account")
    ] = 1.0,
) -> None:
    """Deploy the registry contract (idempotent) and record where it lives."""
    with gateway(create=True) as gw:
        anchoring = anchoring_of(gw)
        if not anchoring.lock.acquire():
            raise fail(
                f"another ztbridge process (pid {anchoring.lock.holder() or '?'}) holds the"
                " ledger: stop 'ztbridge up' first"
            )
        try:
            if rpc is None:
                session = anchoring.connect()  # deploys on first use
                session.close()
                d = session.deployment
                out.print(f"registry on the embedded chain at {d.address} (block {d.deploy_block})")
                return
            _deploy_rpc(gw, anchoring, rpc, funder_key, int(fund_eth * ETH))
        except ZtbridgeError as e:
            raise fail(str(e)) from None
        finally:
            anchoring.lock.release()


def _deploy_rpc(
    gw: Gateway, anchoring: Anchoring, url: str, funder_key: str | None, wei: int
) -> None:
    from eth_account import Account

    from gateway.ledger.deployment import (
        check_deployment,
        deploy_registry,
        find_deployment,
        fund_accounts,
        record_deployment,
        rpc_chain,
    )

    s = gw.settings.ledger
    chain = rpc_chain(url, request_timeout=s.request_timeout, receipt_timeout=s.receipt_timeout)
    try:
        accounts = anchoring.accounts
        existing = find_deployment(gw.db, "rpc", chain)
        if existing is not None:
            check_deployment(chain, existing, url)
            out.print(f"already deployed on this chain at {existing.address}; nothing to do")
            return
        if funder_key:
            try:
                funder = Account.from_key(funder_key)
            except (ValueError, TypeError) as e:
                raise fail(f"--funder-key is not a private key: {e}") from None
            fund_accounts(chain, funder, accounts, wei)
        ledger = deploy_registry(chain, accounts, gw.custodian)
        d = record_deployment(
            gw.db, gw.audit, gw.clock, "rpc", chain, ledger, accounts, actor(), rpc_url=url
        )
    finally:
        chain.close()
    out.print(
        f"registry deployed at {d.address} on chain {d.chain_id} (block {d.deploy_block})\n"
        f"  admin   {d.admin}\n  sender  {d.sender}\n  owner   {d.custodian} (custodian)"
    )
    if s.backend != "rpc":
        out.print(
            'To anchor there, set [ledger] backend = "rpc" (or ZTBRIDGE_LEDGER__BACKEND=rpc)'
            " and restart 'ztbridge up'.",
            highlight=False,
            markup=False,
        )


@app.command("info")
def chain_info(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Backend, registry address, block height, gateway account and balance, pending anchors."""
    from gateway import ledger_status

    with gateway() as gw:
        anchoring = anchoring_of(gw)
        info = ledger_status.chain_info(gw, anchoring)
    if as_json:
        out.print_json(json.dumps(info))
        return
    table = Table(show_header=False, box=None)

    def row(k: str, v: object) -> None:
        table.add_row(f"[bold]{k}[/]", escape(str(v)))

    row("backend", info["backend"])
    row("chain", info["chain"])
    if "address" in info:
        row("registry", f"{info['address']} (chain id {info['chain_id']})")
        row("block height", info["block_height"])
    row("gateway account", info["sender"] + _eth(info.get("sender_balance_wei")))
    row("admin account", info["admin"] + _eth(info.get("admin_balance_wei")))
    row("records owner", f"{info['custodian_account']} (custodian)")
    if "records_on_chain" in info:
        row("records on chain", info["records_on_chain"])
    row(
        "anchored",
        f"{info['batches_anchored']} batches; audit log up to entry {info['audit_anchored_to']}"
        f" of {info['audit_head']}",
    )
    row(
        "pending anchors",
        f"{info['batches_pending']} batches, {info['audit_pending']} audit ranges;"
        f" {info['instances_unbatched']} instances not yet sealed into a batch",
    )
    if info["batches_conflict"]:
        row("conflicts", f"{info['batches_conflict']} batches (see docs/ledger.md)")
    if info["last_error"]:
        row("last error", info["last_error"])
    out.print(table)


def _eth(wei: int | None) -> str:
    return "" if wei is None else f"  balance {wei / ETH:.6f} ETH"


@app.command("drain")
def chain_drain() -> None:
    """Seal every study not yet in a batch and anchor everything pending, now.

    For when 'ztbridge up' is not running ('up' drains by itself). Exits 1 if anything is
    left pending (the chain was unreachable).
    """
    from gateway.anchoring.drain import drain
    from gateway.anchoring.outbox import outbox_counts

    with gateway("write") as gw:
        result = drain(anchoring_of(gw))
        counts = outbox_counts(gw.db)
    out.print(
        f"{result.sealed} batches sealed; {result.batches} batches and {result.audit_ranges}"
        f" audit ranges anchored; pending: {counts.batches_pending} batches,"
        f" {counts.audit_pending} audit ranges"
    )
    if result.error:
        raise fail(f"anchoring stopped: {result.error}")
