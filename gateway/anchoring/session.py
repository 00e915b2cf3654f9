"""Connecting to the registry the settings name: the embedded chain or a JSON-RPC node.

The embedded chain deploys itself on first connection (the first ``ztbridge up``); a JSON-RPC
chain must have been deployed to with ``ztbridge chain deploy --rpc URL``, and is checked to be
that same chain (chain id, hash of the deployment block, code at the address) before anything
is sent to it. Only a registry of this build's version is written to: an older one on the
embedded chain is replaced by a new deployment at the next writable start (its records stay
readable where they are); on an RPC chain the operator is told to run ``chain deploy``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.audit import AuditLog
from gateway.clock import Clock
from gateway.index.database import Database
from gateway.keys import CustodianPublic
from gateway.ledger.accounts import GatewayAccounts
from gateway.ledger.chain import Chain
from gateway.ledger.deployment import (
    EMBEDDED_FUNDING,
    Deployment,
    check_deployment,
    deploy_registry,
    find_deployment,
    fund_accounts,
    latest_deployment,
    open_embedded,
    outdated_message,
    record_deployment,
    rpc_chain,
)
from gateway.ledger.embedded import EmbeddedChain
from gateway.ledger.errors import LedgerConfigError
from gateway.ledger.ledger import Ledger
from gateway.ledger.retry import RetryPolicy
from gateway.settings import Settings

ETH = 10**18

log = logging.getLogger("ztbridge.anchoring")


@dataclass
class Session:
    """A connected registry: the chain, the contract on it, and its deployment row."""

    chain: Chain
    ledger: Ledger
    deployment: Deployment

    def close(self) -> None:
        """Close the chain (the embedded one closes its journal)."""
        self.chain.close()


def rpc_url(settings: Settings, db: Database) -> str:
    """The URL in force: the setting, else the one the last ``chain deploy --rpc`` recorded."""
    if settings.ledger.rpc_url:
        return settings.ledger.rpc_url
    last = latest_deployment(db, "rpc")
    if last is None or not last.rpc_url:
        raise LedgerConfigError(
            "the ledger backend is rpc but no registry was deployed to a node yet: run"
            " 'ztbridge chain deploy --rpc URL' (and set [ledger] rpc_url or"
            " ZTBRIDGE_LEDGER__RPC_URL if the node moves)"
        )
    return last.rpc_url


def connect(
    settings: Settings,
    db: Database,
    audit: AuditLog,
    clock: Clock,
    accounts: GatewayAccounts,
    custodian: CustodianPublic,
    *,
    read_only: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    actor: str = "ztbridge",
    full_replay: bool = False,
) -> Session:
    """Open the registry named by the settings; deploy it on a fresh embedded chain.

    ``read_only``: replay the embedded journal without touching it (another process may be
    appending), and never deploy. ``full_replay``: rebuild the embedded chain from its journal
    alone, ignoring the snapshot (an audit's choice: slow, trusts nothing but the journal).
    Raises LedgerUnavailableError while a node is unreachable,
    LedgerConfigError when the chain is not the one recorded.
    """
    ls = settings.ledger
    chain: Chain
    if ls.backend == "embedded":
        embedded = open_embedded(
            settings.home, read_only=read_only, sleep=sleep, use_snapshot=not full_replay
        )
        chain = embedded
        try:
            deployment = latest_deployment(db, "embedded")
            if deployment is None:
                if read_only:
                    raise LedgerConfigError(
                        "no registry on the embedded chain yet: the first 'ztbridge up' (or"
                        " 'ztbridge chain deploy') deploys it"
                    )
                deployment = _deploy_embedded(
                    embedded, db, audit, clock, accounts, custodian, actor
                )
            check_deployment(chain, deployment, "the embedded chain")
            old = Ledger(chain, deployment.address)
            if not read_only and not old.is_current():
                log.warning(
                    "%s; deploying the new registry on the embedded chain now",
                    outdated_message(old, "the embedded chain", "See docs/ledger.md, 'Upgrading'"),
                )
                deployment = _deploy_embedded(
                    embedded, db, audit, clock, accounts, custodian, actor
                )
            if not read_only:  # test ether is free here: keep the sender topped up
                embedded.fund(accounts.sender_address, EMBEDDED_FUNDING, minimum=ETH)
        except BaseException:
            chain.close()
            raise
    else:
        url = rpc_url(settings, db)
        chain = rpc_chain(
            url,
            request_timeout=ls.request_timeout,
            receipt_timeout=ls.receipt_timeout,
            retry=RetryPolicy(attempts=3, base_delay=0.5, max_delay=2.0),
            sleep=sleep,
        )
        found = find_deployment(db, "rpc", chain)
        outdated = None if found else find_deployment(db, "rpc", chain, current_only=False)
        if outdated is not None and not read_only:
            chain.close()
            raise LedgerConfigError(
                outdated_message(
                    Ledger(chain, outdated.address),
                    url,
                    f"Run 'ztbridge chain deploy --rpc {url}' to deploy it there (anchors wait"
                    " in the outbox until then)",
                )
            )
        found = found or outdated
        if found is None:
            raise LedgerConfigError(
                f"no registry was deployed to the chain at {url} (chain id {chain.chain_id}):"
                f" run 'ztbridge chain deploy --rpc {url}'"
            )
        deployment = found
        check_deployment(chain, deployment, url)
    return Session(chain, Ledger(chain, deployment.address), deployment)


def open_deployment(
    settings: Settings, deployment: Deployment, *, full_replay: bool = False
) -> Session:
    """A read-only connection to a recorded deployment (verify: batches anchored elsewhere)."""
    chain: Chain
    if deployment.backend == "embedded":
        chain = open_embedded(settings.home, read_only=True, use_snapshot=not full_replay)
        where = "the embedded chain"
    else:
        if not deployment.rpc_url:
            raise LedgerConfigError(f"deployment {deployment.id} has no recorded URL")
        where = deployment.rpc_url
        chain = rpc_chain(where, request_timeout=settings.ledger.request_timeout)
    try:
        check_deployment(chain, deployment, where)
    except BaseException:
        chain.close()
        raise
    return Session(chain, Ledger(chain, deployment.address), deployment)


def _deploy_embedded(
    chain: EmbeddedChain,
    db: Database,
    audit: AuditLog,
    clock: Clock,
    accounts: GatewayAccounts,
    custodian: CustodianPublic,
    actor: str,
) -> Deployment:
    fund_accounts(chain, chain.genesis_accounts[0], accounts, EMBEDDED_FUNDING)
    ledger = deploy_registry(chain, accounts, custodian)
    return record_deployment(db, audit, clock, "embedded", chain, ledger, accounts, actor)
