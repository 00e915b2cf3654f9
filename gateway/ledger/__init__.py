"""The ledger: the registry contract on an embedded py-evm chain or a JSON-RPC node."""

from gateway.ledger.chain import Chain
from gateway.ledger.embedded import EmbeddedChain
from gateway.ledger.errors import (
    LedgerConfigError,
    LedgerError,
    LedgerRevertError,
    LedgerUnavailableError,
)
from gateway.ledger.factory import open_chain, open_ledger
from gateway.ledger.ledger import AnchorReceipt, Ledger, LedgerEvent, Record, Role, User
from gateway.ledger.rpc import RpcChain

__all__ = [
    "AnchorReceipt",
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
