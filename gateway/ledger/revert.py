"""Revert data extraction and decoding against the ABI's custom errors.

Why this exists: on ``EthereumTesterProvider`` a custom error surfaces as eth-tester's
``TransactionFailed`` whose message is the repr of the raw revert bytes, while a JSON-RPC node
gives web3's ``ContractCustomError``/``ContractLogicError`` with hex ``data``. Both are mapped
to the 4-byte selector of an error the ABI declares, then to ``LedgerRevertError``. (Same logic
as ``tests/contracts/harness.py``; the gateway must not import tests.)
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address

from gateway.ledger.errors import LedgerRevertError

_BUILTIN_ERRORS: list[dict[str, Any]] = [
    {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
]

#: Name used when a revert carries no data the ABI can explain.
UNKNOWN_REVERT = "UnknownRevert"


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert bytes carried by ``exc``, whichever provider raised it, or None."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if isinstance(data, bytes):
        return data
    message = str(exc.args[0]) if exc.args else ""
    message = message.removeprefix("execution reverted: ")
    if message.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(message)
        except (ValueError, SyntaxError):
            return None
        if isinstance(value, bytes):
            return value
    return None


class ErrorDecoder:
    """Maps revert data to the custom error (or Error/Panic) it encodes."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._by_selector: dict[bytes, tuple[str, list[str]]] = {}
        for entry in [*abi, *_BUILTIN_ERRORS]:
            if entry.get("type") != "error":
                continue
            types = [str(i["type"]) for i in entry.get("inputs", [])]
            signature = f"{entry['name']}({','.join(types)})"
            self._by_selector[function_signature_to_4byte_selector(signature)] = (
                str(entry["name"]),
                types,
            )

    @property
    def names(self) -> set[str]:
        """Every error name the decoder knows."""
        return {name for name, _ in self._by_selector.values()}

    def decode(self, data: bytes | None) -> LedgerRevertError:
        """The ``LedgerRevertError`` for ``data``; ``UnknownRevert`` when it cannot be decoded."""
        if data is None or len(data) < 4 or data[:4] not in self._by_selector:
            return LedgerRevertError(UNKNOWN_REVERT, (data.hex(),) if data else ())
        name, types = self._by_selector[data[:4]]
        try:
            values = abi_decode(types, data[4:])
        except Exception:  # malformed payload: keep the name, drop the args
            return LedgerRevertError(name, ())
        return LedgerRevertError(
            name,
            tuple(
                to_checksum_address(v) if t == "address" else v
                for t, v in zip(types, values, strict=True)
            ),
        )

    def from_exception(self, exc: BaseException) -> LedgerRevertError:
        """Decode whatever revert ``exc`` carries."""
        return self.decode(revert_data(exc))
