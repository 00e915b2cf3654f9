"""A connection to a chain: web3, nonces, signing, submission and receipt waiting.

Why one class shared by both backends: the embedded chain and a JSON-RPC node differ only in
how a signed transaction reaches a block (the embedded one also journals it), so signing,
nonce management, retries and receipt polling are written once here and ``submit`` is the
single override point. Transactions are always signed locally with a ``LocalAccount``: no node
ever holds a gateway key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_tester.exceptions import TransactionFailed
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TransactionNotFound,
    Web3Exception,
)
from web3.types import TxParams, TxReceipt, Wei

from gateway.ledger.errors import LedgerError, LedgerRevertError, LedgerUnavailableError
from gateway.ledger.retry import RetryPolicy, with_retry
from gateway.ledger.revert import ErrorDecoder

#: What a failed call or transaction estimate raises, on eth-tester and on a JSON-RPC node.
REVERTS: tuple[type[BaseException], ...] = (TransactionFailed, ContractLogicError)

#: Raised through ``call_node`` untouched: the caller decides what they mean.
_PASSTHROUGH: tuple[type[BaseException], ...] = (*REVERTS, TransactionNotFound, BlockNotFound)

#: Headroom over the gas estimate: state can move between estimate and inclusion on a real node.
GAS_HEADROOM = 1.2


class NonceTracker:
    """Per-account next nonce, fetched once from the node ("pending") then counted locally.

    Why local counting: two transactions from the same gateway key sent back to back must not
    both ask the node and get the same nonce. The per-account lock is held from nonce choice to
    submission; on any failure the cached value is dropped and re-read next time.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}

    def lock(self, address: str) -> threading.Lock:
        """The lock serialising ``address``'s transactions."""
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    def peek(self, address: str, fetch: Callable[[], int]) -> int:
        """The nonce to use next (caller holds ``lock(address)``)."""
        if address not in self._next:
            self._next[address] = fetch()
        return self._next[address]

    def consumed(self, address: str) -> None:
        """The peeked nonce reached the node."""
        self._next[address] += 1

    def forget(self, address: str) -> None:
        """Something went wrong: re-read from the node next time."""
        self._next.pop(address, None)


class Chain:
    """web3 plus the transaction pipeline; subclasses decide how raw transactions are sent."""

    def __init__(
        self,
        w3: Web3,
        *,
        retry: RetryPolicy | None = None,
        receipt_timeout: float = 120.0,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.w3 = w3
        self.retry = retry or RetryPolicy()
        self.receipt_timeout = receipt_timeout
        self.poll_interval = poll_interval
        self.clock = clock
        self.sleep = sleep
        self.nonces = NonceTracker()
        self._chain_id: int | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def call_node(self, fn: Callable[[], Any], what: str) -> Any:
        """Run a read against the node with retry; library errors become LedgerErrors."""
        try:
            return with_retry(fn, policy=self.retry, sleep=self.sleep, what=what)
        except LedgerError:
            raise
        except _PASSTHROUGH:
            raise
        except (Web3Exception, ValueError) as e:
            raise LedgerError(f"{what} failed: {e}") from e

    @property
    def chain_id(self) -> int:
        """The chain id, asked once (it is signed into every transaction)."""
        if self._chain_id is None:
            self._chain_id = int(self.call_node(lambda: self.w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def block_hash(self, number: int) -> bytes | None:
        """Hash of block ``number`` (None if the chain is not that long)."""
        try:
            block = self.call_node(lambda: self.w3.eth.get_block(number), "eth_getBlockByNumber")
        except BlockNotFound:
            return None
        return bytes(block["hash"])

    def has_code(self, address: str) -> bool:
        """Whether a contract is deployed at ``address``."""
        checksum = Web3.to_checksum_address(address)
        return len(self.call_node(lambda: self.w3.eth.get_code(checksum), "eth_getCode")) > 0

    def nonce(self, address: str) -> int:
        """Transactions ``address`` has had mined."""
        checksum = Web3.to_checksum_address(address)
        return int(
            self.call_node(
                lambda: self.w3.eth.get_transaction_count(checksum), "eth_getTransactionCount"
            )
        )

    def block_height(self) -> int:
        """The latest block number."""
        return int(self.call_node(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    def balance(self, address: str) -> int:
        """Balance of ``address`` in wei."""
        checksum = Web3.to_checksum_address(address)
        return int(self.call_node(lambda: self.w3.eth.get_balance(checksum), "eth_getBalance"))

    def fee_params(self) -> dict[str, int]:
        """EIP-1559 fees: twice the latest base fee plus the node's suggested tip."""
        block = self.call_node(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            tip = int(self.call_node(lambda: self.w3.eth.max_priority_fee, "eth_maxPriorityFee"))
        except LedgerError:
            tip = 10**9
        return {"maxFeePerGas": 2 * base + tip, "maxPriorityFeePerGas": tip}

    def submit(self, raw: bytes) -> bytes:
        """Hand a signed transaction to the chain; its hash. Overridden by the embedded chain."""
        return bytes(self.w3.eth.send_raw_transaction(raw))

    def close(self) -> None:
        """Release resources (the embedded chain closes its journal)."""

    # -- transactions -----------------------------------------------------------------------

    def transact(
        self,
        account: LocalAccount,
        build: Callable[[TxParams], TxParams],
        *,
        decoder: ErrorDecoder | None = None,
        what: str = "transaction",
    ) -> TxReceipt:
        """Build (estimating gas), sign, submit and await one transaction from ``account``.

        ``build`` gets the base parameters (from, nonce, chainId, fees) and returns the full
        transaction; a revert during its gas estimate is decoded with ``decoder`` and raised as
        LedgerRevertError before any nonce is used.
        """
        address = account.address
        with self.nonces.lock(address):
            try:
                nonce = self.nonces.peek(
                    address,
                    lambda: int(
                        self.call_node(
                            lambda: self.w3.eth.get_transaction_count(address, "pending"),
                            "eth_getTransactionCount",
                        )
                    ),
                )
                base: TxParams = {
                    "from": address,
                    "nonce": nonce,
                    "chainId": self.chain_id,
                    **self.fee_params(),  # type: ignore[typeddict-item]
                }
                try:
                    tx = self.call_node(lambda: build(base), f"{what} (estimate)")
                except REVERTS as e:
                    raise self._revert(e, decoder) from e
                signed = account.sign_transaction(dict(tx))  # type: ignore[arg-type]
                raw = bytes(signed.raw_transaction)
                tx_hash = self.call_node(lambda: self.submit(raw), f"{what} (send)")
                self.nonces.consumed(address)
            except BaseException:
                self.nonces.forget(address)
                raise
        try:
            receipt = self.wait_for_receipt(tx_hash)
        except LedgerError:
            # The transaction may never land (a node restarted without its mempool): re-read
            # the nonce from the node next time rather than leave a gap no later one can fill.
            with self.nonces.lock(address):
                self.nonces.forget(address)
            raise
        if receipt["status"] != 1:
            raise self._replay_revert(tx, receipt, decoder)
        return receipt

    def send_value(self, account: LocalAccount, to: str, wei: int) -> TxReceipt:
        """A plain transfer (funding a gateway account)."""

        def build(base: TxParams) -> TxParams:
            return {**base, "to": Web3.to_checksum_address(to), "value": Wei(wei), "gas": 21000}

        return self.transact(account, build, what="transfer")

    def wait_for_receipt(self, tx_hash: bytes) -> TxReceipt:
        """Poll for the receipt until ``receipt_timeout`` (measured on the injected clock).

        The first polls come quickly (50 ms, doubling up to ``poll_interval``): a dev node
        or a fast permissioned chain mines at once, a public one takes seconds.
        """
        start = self.clock()
        delay = min(0.05, self.poll_interval)
        while True:
            try:
                receipt: TxReceipt = self.call_node(
                    lambda: self.w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
                    "eth_getTransactionReceipt",
                )
                return receipt
            except TransactionNotFound:
                pass
            elapsed = self.clock() - start
            if elapsed >= self.receipt_timeout:
                raise LedgerUnavailableError(
                    f"transaction 0x{tx_hash.hex()} not mined within {self.receipt_timeout}s"
                )
            self.sleep(min(delay, self.receipt_timeout - elapsed))
            delay = min(delay * 2, self.poll_interval)

    @staticmethod
    def _revert(exc: BaseException, decoder: ErrorDecoder | None) -> LedgerRevertError:
        if decoder is None:
            decoder = ErrorDecoder([])
        return decoder.from_exception(exc)

    def _replay_revert(
        self, tx: TxParams, receipt: TxReceipt, decoder: ErrorDecoder | None
    ) -> LedgerRevertError:
        """A mined-but-failed transaction: re-run it as a call at its block for the reason."""
        call: TxParams = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value")}  # type: ignore[assignment]
        try:
            self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)
        except REVERTS as e:
            return self._revert(e, decoder)
        except Exception:  # the reason is best effort; the failure itself is certain
            pass
        return LedgerRevertError("UnknownRevert", ())


def checksum(address: str) -> ChecksumAddress:
    """A checksummed address (web3 refuses lowercase ones)."""
    return Web3.to_checksum_address(address)
