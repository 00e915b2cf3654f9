"""Pick a ledger backend from configuration.

Why a factory: the services take a ``Ledger`` and must not care whether the chain is the
embedded py-evm one (single-node deployments, tests) or a JSON-RPC node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from gateway.ledger.chain import Chain
from gateway.ledger.embedded import EmbeddedChain
from gateway.ledger.errors import LedgerConfigError
from gateway.ledger.ledger import Ledger
from gateway.ledger.rpc import RpcChain

Backend = Literal["embedded", "rpc"]


def open_chain(
    backend: Backend, *, journal: Path | None = None, url: str | None = None, **options: Any
) -> Chain:
    """A chain connection: ``embedded`` (optionally journaled) or ``rpc`` (needs ``url``)."""
    if backend == "embedded":
        return EmbeddedChain(journal, **options)
    if backend == "rpc":
        if not url:
            raise LedgerConfigError("the rpc ledger backend needs a URL")
        return RpcChain(url, **options)
    raise LedgerConfigError(f"unknown ledger backend {backend!r} (embedded or rpc)")


def open_ledger(
    backend: Backend,
    address: str,
    *,
    journal: Path | None = None,
    url: str | None = None,
    **options: Any,
) -> Ledger:
    """The registry at ``address`` on the chosen backend."""
    return Ledger(open_chain(backend, journal=journal, url=url, **options), address)
