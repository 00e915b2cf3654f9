"""The ledger: the registry contract on an embedded py-evm chain or a JSON-RPC node.

Names are loaded on first use (PEP 562): web3, eth-tester and py-evm take most of a second
to import, and commands that never touch the chain (``status``, ``device``, ``export``) must
not pay for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.ledger.chain import Chain
    from gateway.ledger.embedded import EmbeddedChain
    from gateway.ledger.errors import (
        LedgerConfigError,
        LedgerError,
        LedgerRevertError,
        LedgerUnavailableError,
    )
    from gateway.ledger.factory import open_chain, open_ledger
    from gateway.ledger.ledger import (
        AnchorReceipt,
        AuditAnchor,
        Ledger,
        LedgerEvent,
        Record,
        Role,
        User,
    )
    from gateway.ledger.rpc import RpcChain

_WHERE = {
    "AnchorReceipt": "ledger",
    "AuditAnchor": "ledger",
    "Chain": "chain",
    "EmbeddedChain": "embedded",
    "Ledger": "ledger",
    "LedgerConfigError": "errors",
    "LedgerError": "errors",
    "LedgerEvent": "ledger",
    "LedgerRevertError": "errors",
    "LedgerUnavailableError": "errors",
    "Record": "ledger",
    "Role": "ledger",
    "RpcChain": "rpc",
    "User": "ledger",
    "open_chain": "factory",
    "open_ledger": "factory",
}

__all__ = [
    "AnchorReceipt",
    "AuditAnchor",
    "Chain",
    "EmbeddedChain",
    "Ledger",
    "LedgerConfigError",
    "LedgerError",
    "LedgerEvent",
    "LedgerRevertError",
    "LedgerUnavailableError",
    "Record",
    "Role",
    "RpcChain",
    "User",
    "open_chain",
    "open_ledger",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'gateway.ledger' has no attribute {name!r}")
    value = getattr(import_module(f"gateway.ledger.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
