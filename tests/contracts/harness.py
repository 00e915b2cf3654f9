"""Test harness for the registry contract: deploy the committed artifact, send, decode reverts.

Why a harness rather than web3's own error classes: on ``EthereumTesterProvider`` a custom
error surfaces as eth-tester's ``TransactionFailed`` whose message is the *repr* of the raw
revert bytes, not as web3's ``ContractCustomError``; on a JSON-RPC node (anvil) it is the
latter with hex ``data``. ``revert_data`` accepts both, and ``ErrorDecoder`` maps the 4-byte
selector back to an error declared in the ABI, so a test asserts "reverted with
``NotRecordOwner(recordId, caller)``" rather than "reverted somehow".
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import event_abi_to_log_topic, function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.types import TxReceipt

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = ROOT / "contracts"
ARTIFACT = CONTRACTS_DIR / "build" / "ZtbridgeRegistry.json"

#: What a failed call or transaction raises, on eth-tester and on a JSON-RPC node.
REVERTS = (TransactionFailed, ContractLogicError)

# Solidity's built-in revert payloads, decoded like any declared error.
_BUILTIN_ERRORS: list[dict[str, Any]] = [
    {"type": "error", "name": "Error", "inputs": [{"name": "message", "type": "string"}]},
    {"type": "error", "name": "Panic", "inputs": [{"name": "code", "type": "uint256"}]},
]


def load_artifact(path: Path = ARTIFACT) -> dict[str, Any]:
    """The committed build artifact (ABI, bytecode, compiler settings, source hashes)."""
    artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return artifact


def _signature(entry: dict[str, Any]) -> str:
    types = [str(i["type"]) for i in entry.get("inputs", [])]
    if any(t.startswith("tuple") for t in types):
        raise NotImplementedError(f"tuple arguments are not supported: {entry['name']}")
    return f"{entry['name']}({','.join(types)})"


@dataclass(frozen=True)
class DecodedError:
    """A revert decoded against the ABI: the error's name and its arguments."""

    name: str
    args: tuple[Any, ...]


def revert_data(exc: BaseException) -> bytes:
    """The raw revert bytes carried by ``exc``, whichever provider raised it."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    message = str(exc.args[0]) if exc.args else ""
    message = message.removeprefix("execution reverted: ")
    if message.startswith(("b'", 'b"')):
        value = ast.literal_eval(message)
        if isinstance(value, bytes):
            return value
    raise AssertionError(f"no revert data in {exc!r}")


@dataclass
class ErrorDecoder:
    """Maps revert data to the custom error (or Error/Panic) it encodes."""

    abi: Sequence[dict[str, Any]]
    _by_selector: dict[bytes, tuple[str, list[str]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for entry in [*self.abi, *_BUILTIN_ERRORS]:
            if entry.get("type") != "error":
                continue
            selector = function_signature_to_4byte_selector(_signature(entry))
            types = [str(i["type"]) for i in entry.get("inputs", [])]
            self._by_selector[selector] = (str(entry["name"]), types)

    @property
    def names(self) -> set[str]:
        """Every error name the decoder knows."""
        return {name for name, _ in self._by_selector.values()}

    def decode(self, data: bytes) -> DecodedError:
        """Decode ``data``; fail loudly on a selector the ABI does not declare."""
        if len(data) < 4:
            raise AssertionError(f"revert without an error selector: {data!r}")
        try:
            name, types = self._by_selector[data[:4]]
        except KeyError:
            raise AssertionError(f"revert with an undeclared error: 0x{data.hex()}") from None
        values = abi_decode(types, data[4:])
        # Addresses come back lowercase; checksum them so they compare equal to web3's accounts.
        return DecodedError(
            name,
            tuple(
                to_checksum_address(v) if t == "address" else v
                for t, v in zip(types, values, strict=True)
            ),
        )


@dataclass
class Registry:
    """A deployed registry plus what tests need to drive it."""

    w3: Web3
    contract: Contract
    abi: list[dict[str, Any]]
    decoder: ErrorDecoder

    @property
    def fn(self) -> Any:
        """``contract.functions`` (typed loosely: its attributes come from the ABI)."""
        return self.contract.functions

    def send(self, call: ContractFunction, sender: str) -> TxReceipt:
        """Transact ``call`` from ``sender``; the receipt of a successful transaction."""
        tx_hash = call.transact({"from": sender})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1, receipt
        return receipt

    def reverts(self, call: ContractFunction, sender: str) -> DecodedError:
        """Transact ``call`` from ``sender``, which must revert; the decoded error."""
        with self.expect_revert() as caught:
            call.transact({"from": sender})
        assert caught, "expected a revert"
        return caught[0]

    @contextmanager
    def expect_revert(self, name: str | None = None, *args: Any) -> Iterator[list[DecodedError]]:
        """Context manager: the block must revert (with error ``name`` and ``args`` if given)."""
        caught: list[DecodedError] = []
        try:
            yield caught
        except REVERTS as exc:
            decoded = self.decoder.decode(revert_data(exc))
            caught.append(decoded)
        else:
            raise AssertionError(f"expected a revert{f' with {name}' if name else ''}")
        if name is not None:
            assert decoded.name == name, f"reverted with {decoded}, expected {name}"
            if args:
                assert decoded.args == args, f"reverted with {decoded}, expected {name}{args}"

    def events(self, receipt: TxReceipt) -> list[tuple[str, dict[str, Any]]]:
        """Every event of this contract's ABI in ``receipt``, in log order, as (name, args)."""
        by_topic: dict[bytes, str] = {
            event_abi_to_log_topic(e): str(e["name"])  # type: ignore[arg-type]
            for e in self.abi
            if e.get("type") == "event"
        }
        out: list[tuple[str, dict[str, Any]]] = []
        for log in receipt["logs"]:
            if log["address"] != self.contract.address or not log["topics"]:
                continue
            name = by_topic[bytes(log["topics"][0])]
            decoded = self.contract.events[name]().process_log(log)
            out.append((name, dict(decoded["args"])))
        return out


def deploy(w3: Web3, artifact: dict[str, Any], admin: str, admin_key: bytes) -> Registry:
    """Deploy the artifact's bytecode with ``admin`` as the first ADMIN."""
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = factory.constructor(admin, admin_key).transact({"from": admin})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1 and receipt["contractAddress"], receipt
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
    return Registry(
        w3=w3, contract=contract, abi=artifact["abi"], decoder=ErrorDecoder(artifact["abi"])
    )
