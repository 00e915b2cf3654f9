"""Where the registry lives, putting it there, and connecting to it.

A deployment is recorded in the index (``ledger_deployments``) with the chain's id and the
hash of the block that deployed the contract, so the gateway can tell "the node at this URL is
the chain I deployed to" from "this is a fresh dev chain" or "someone pointed me at another
network". Deploying is idempotent: the
registry is deployed by the admin account, so after a crash between mining it and recording
it, the contract is found again at one of the admin's CREATE addresses instead of being deployed
twice; user registrations are checked on-chain before each is sent.

Versions: the gateway writes only to a registry whose code is exactly its own artifact's
(``Ledger.is_current``). A deployment of an older registry (version 1: per-record grants, no
transfer) stays readable (the views the gateway reads kept their signatures) but is never
written to: the embedded chain deploys the new registry beside it on the next start, and an
RPC chain is told to run ``ztbridge chain deploy --rpc URL`` (docs/ledger.md, "Upgrading").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy import insert, select
from web3.utils.address import get_create_address

from gateway.audit import AuditEvent, AuditLog
from gateway.clock import Clock
from gateway.index.database import Database
from gateway.index.models import ledger_deployments
from gateway.keys import CustodianPublic
from gateway.ledger.accounts import GatewayAccounts
from gateway.ledger.chain import Chain
from gateway.ledger.embedded import EmbeddedChain
from gateway.ledger.errors import LedgerConfigError
from gateway.ledger.ledger import CONTRACT_VERSION, Ledger, Role
from gateway.ledger.rpc import RpcChain

#: The embedded chain's journal, relative to the data folder.
JOURNAL = Path("ledger") / "chain.journal"
#: What the embedded chain's genesis account gives each gateway account (test ether).
EMBEDDED_FUNDING = 1000 * 10**18
#: Gas the admin spends on deploy + two registrations, for the "needs funds" check.
DEPLOY_GAS = 4_000_000
#: Gas of one anchorRecord with headroom (≈ 490 k with an X25519 capsule), for the funding hint.
ANCHOR_GAS = 600_000


@dataclass(frozen=True)
class Deployment:
    """A registry contract on one chain."""

    id: int
    backend: str
    chain_id: int
    deploy_block_hash: str
    address: str
    deploy_block: int
    rpc_url: str | None
    admin: str
    sender: str
    custodian: str
    created_at: str


def _row(r: Any) -> Deployment:
    return Deployment(**{c: getattr(r, c) for c in Deployment.__dataclass_fields__})


def list_deployments(db: Database) -> list[Deployment]:
    """Every recorded deployment, oldest first."""
    with db.read() as conn:
        rows = conn.execute(select(ledger_deployments).order_by(ledger_deployments.c.id)).all()
    return [_row(r) for r in rows]


def latest_deployment(db: Database, backend: str) -> Deployment | None:
    """The most recent deployment on ``backend``."""
    found = [d for d in list_deployments(db) if d.backend == backend]
    return found[-1] if found else None


def _hex(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


def find_deployment(
    db: Database, backend: str, chain: Chain, *, current_only: bool = True
) -> Deployment | None:
    """The newest recorded deployment that ``chain`` holds (same id, same deploy block).

    ``current_only`` (the default): only one whose code is this build's registry, so a chain
    holding just an older registry reads as "not deployed yet" and ``chain deploy`` deploys
    the new one; pass False to find the old one (to say so).
    """
    for d in reversed(list_deployments(db)):
        if d.backend != backend or d.chain_id != chain.chain_id:
            continue
        if _hex(chain.block_hash(d.deploy_block)) != d.deploy_block_hash:
            continue
        if not current_only or Ledger(chain, d.address).is_current():
            return d
    return None


def outdated_message(ledger: Ledger, where: str, fix: str) -> str:
    """What to tell an operator whose recorded registry is an older version."""
    return (
        f"the registry at {ledger.address} on {where} is version {ledger.contract_version()};"
        f" this ztbridge needs version {CONTRACT_VERSION} (study transfers, per-study grants)."
        f" {fix}. Records anchored on the old registry stay where they are and stay readable"
        " ('ztbridge verify' reads each batch from the registry it went to)"
    )


def record_deployment(
    db: Database,
    audit: AuditLog,
    clock: Clock,
    backend: str,
    chain: Chain,
    ledger: Ledger,
    accounts: GatewayAccounts,
    actor: str,
    rpc_url: str | None = None,
) -> Deployment:
    """Write the deployment row and its audit event in one transaction."""
    values = {
        "backend": backend,
        "chain_id": chain.chain_id,
        "deploy_block_hash": _hex(chain.block_hash(ledger.deploy_block)),
        "address": ledger.address,
        "deploy_block": ledger.deploy_block,
        "rpc_url": rpc_url,
        "admin": accounts.admin_address,
        "sender": accounts.sender_address,
        "custodian": accounts.custodian_address,
        "created_at": clock.now().isoformat(),
    }
    with db.write() as conn:
        new_id = conn.execute(insert(ledger_deployments).values(**values)).inserted_primary_key
        audit.append(
            conn,
            AuditEvent(
                "ledger.deployed",
                actor,
                ledger.address,
                "ok",
                {"backend": backend, "chain_id": values["chain_id"], "url": rpc_url or ""},
            ),
        )
    assert new_id is not None
    return Deployment(id=int(new_id[0]), **values)  # type: ignore[arg-type]


def funding_hint(chain: Chain, accounts: GatewayAccounts) -> str:
    """How much the gateway's accounts need on ``chain``, in words an operator can act on."""
    fee = int(chain.fee_params()["maxFeePerGas"])
    return (
        f"send ETH on this chain to the gateway's admin account {accounts.admin_address}"
        f" (deploy + registrations: about {DEPLOY_GAS * fee / 1e18:.4f} ETH at today's fees)"
        f" and to its sender account {accounts.sender_address} (about"
        f" {ANCHOR_GAS * fee / 1e18:.6f} ETH per anchor), e.g. from the network's treasury"
        " or faucet account; or pass --funder-key (env ZTBRIDGE_FUNDER_KEY) with the key of a"
        " funded account and ztbridge transfers it"
    )


def fund_accounts(chain: Chain, funder: LocalAccount, accounts: GatewayAccounts, wei: int) -> None:
    """Top the admin and sender accounts up to ``wei`` each from ``funder`` where below half."""
    for who in (accounts.admin_address, accounts.sender_address):
        if chain.balance(who) < wei // 2:
            chain.send_value(funder, who, wei)


def deploy_registry(chain: Chain, accounts: GatewayAccounts, custodian: CustodianPublic) -> Ledger:
    """Deploy (or find, after a crash) the registry and register the gateway's accounts.

    The admin and sender are registered with the custodian's HPKE public key: the contract
    wants one for every user, and anything ever sealed to a gateway account must be
    recoverable by the custodian, never readable by the gateway itself.
    """
    admin = accounts.admin
    fee = int(chain.fee_params()["maxFeePerGas"])
    if fee > 0 and chain.balance(admin.address) < DEPLOY_GAS * fee:
        raise LedgerConfigError(
            "the gateway's admin account has no funds on this chain: "
            + funding_hint(chain, accounts)
        )
    found = _current_registry(chain, admin.address)
    if found is not None:
        ledger = Ledger(chain, found)
        if ledger.user(admin.address).role is not Role.ADMIN:
            raise LedgerConfigError(
                f"the admin account already used this chain for something else ({found})"
            )
        ledger.deploy_block = _code_block(chain, found)
    else:
        ledger = Ledger.deploy(chain, admin, custodian.public)
    ensure_users(ledger, accounts, custodian)
    return ledger


def _current_registry(chain: Chain, admin: str) -> str | None:
    """This build's registry among the contracts ``admin`` created (newest first), if any.

    The admin sends only deployments, registrations and custodian designations, so its nonce
    stays small and this is a handful of ``eth_getCode`` calls.
    """
    for nonce in reversed(range(chain.nonce(admin))):
        address = get_create_address(admin, nonce)  # type: ignore[arg-type]
        if chain.has_code(address) and Ledger(chain, address).is_current():
            return str(address)
    return None


def _code_block(chain: Chain, address: str) -> int:
    """The block that created ``address`` (binary search on code presence)."""
    lo, hi = 0, chain.block_height()
    checksum = chain.w3.to_checksum_address(address)
    while lo < hi:
        mid = (lo + hi) // 2
        code = chain.call_node(
            lambda at=mid: chain.w3.eth.get_code(checksum, at),  # type: ignore[misc]
            "eth_getCode",
        )
        if len(code):
            hi = mid
        else:
            lo = mid + 1
    return lo


def ensure_users(ledger: Ledger, accounts: GatewayAccounts, custodian: CustodianPublic) -> None:
    """Register the sender (SENDER) and the custodian (PATIENT) unless already registered,
    and designate the custodian account unless it already is."""
    wanted = [
        (accounts.sender_address, Role.SENDER),
        (accounts.custodian_address, Role.PATIENT),
    ]
    for address, role in wanted:
        user = ledger.user(address)
        if user.role is None:
            ledger.register_user(accounts.admin, address, role, custodian.public)
        elif user.role is not role:
            raise LedgerConfigError(
                f"account {address} is registered as {user.role.value}, expected {role.value}"
            )
    designated = ledger.custodian()
    if designated is None:
        ledger.designate_custodian(accounts.admin, accounts.custodian_address)
    elif designated != ledger.chain.w3.to_checksum_address(accounts.custodian_address):
        raise LedgerConfigError(
            f"the registry at {ledger.address} names another custodian ({designated})"
        )


def open_embedded(home: Path, *, read_only: bool = False, **options: Any) -> EmbeddedChain:
    """The data folder's embedded chain (snapshot loaded, journal replayed after it; pass
    ``use_snapshot=False`` to rebuild from the journal alone)."""
    return EmbeddedChain(home / JOURNAL, read_only=read_only, **options)


def check_deployment(chain: Chain, deployment: Deployment, where: str) -> None:
    """Refuse a chain that is not the one ``deployment`` was made on."""
    found = _hex(chain.block_hash(deployment.deploy_block)) or "no such block"
    if chain.chain_id != deployment.chain_id or found != deployment.deploy_block_hash:
        raise LedgerConfigError(
            f"{where} is not the chain the registry was deployed to (chain id"
            f" {chain.chain_id}, block {deployment.deploy_block} {found[:12]}…; recorded"
            f" {deployment.chain_id}, {deployment.deploy_block_hash[:12]}…): point [ledger]"
            " rpc_url at that chain, or run 'ztbridge chain deploy --rpc URL' to deploy to"
            " this one"
        )
    if not chain.has_code(deployment.address):
        raise LedgerConfigError(
            f"no contract at the recorded registry address {deployment.address} on {where}"
            " (was the chain reset or its journal replaced?)"
        )


def rpc_chain(url: str, **options: Any) -> RpcChain:
    """A JSON-RPC chain connection."""
    return RpcChain(url, **options)
