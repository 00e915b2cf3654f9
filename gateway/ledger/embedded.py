"""The embedded chain: py-evm in process through eth-tester, running the real contract.

Why it can be trusted across restarts: every mined transaction is journaled (see
``journal.py``) and replayed at start into a fresh chain whose every nondeterministic input is
pinned: the genesis timestamp, each block's timestamp (recorded per entry), and the post-merge
``mix_hash`` (eth-tester draws it from ``os.urandom``; here it is derived from the parent hash).
One transaction per block, mined as it is submitted, so a journal entry is exactly one block.
A snapshot of the chain's database (``snapshot.py``) spares a restart the replay of all but
the blocks mined since it was written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB
from eth.vm.spoof import SpoofTransaction
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3

from gateway.ledger.chain import Chain
from gateway.ledger.errors import LedgerConfigError, LedgerError
from gateway.ledger.journal import Journal, JournalEntry
from gateway.ledger.retry import RetryPolicy
from gateway.ledger.snapshot import Snapshot, read_snapshot, write_snapshot

log = logging.getLogger("ztbridge.ledger")

#: Blocks between snapshots (one is also written at a clean close). Writing the snapshot of
#: a 1000-block chain (21 MB) took 0.1 s here; replaying those 1000 blocks takes ~17 s.
SNAPSHOT_EVERY = 1000

#: Pinned genesis time (2024-01-01T00:00:00Z): part of the genesis hash, so it must not move.
GENESIS_TIMESTAMP = 1_704_067_200
_ZERO_ADDRESS = b"\x00" * 20


def _one_pass_gas_estimate(state: Any, transaction: Any) -> int:
    """Gas for ``transaction``: one execution at the block gas limit, plus margins.

    Why not py-evm's default (a binary search: ~13 executions per estimate): on the embedded
    chain every estimate runs in the gateway's own process, and those executions were two
    thirds of an anchor's CPU. One execution gives the gas consumed before refunds; the
    margins cover what a tighter limit could change (1/64 kept back at each sub-call, the
    2300 gas SSTORE sentry), and ``Ledger`` adds its 20 % headroom on top. A revert raises
    exactly as the binary search would.
    """
    spoof = SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0)
    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(spoof)
        if computation.is_error:
            raise computation.error
        used = int(state.gas_limit - computation.get_gas_remaining())
    finally:
        state.revert(snapshot)
    return min(int(state.gas_limit), used + used // 63 + 2300)


class _DeterministicBackend(PyEVMBackend):  # type: ignore[misc]
    """PyEVMBackend whose mined blocks depend only on their inputs (no random mix_hash)."""

    def mine_blocks(self, num_blocks: int = 1, coinbase: bytes = _ZERO_ADDRESS) -> tuple[Any, ...]:
        hashes = []
        for _ in range(num_blocks):
            parent = self.chain.get_canonical_head()
            block = self.chain.mine_block(
                coinbase=coinbase,
                mix_hash=keccak(b"ztbridge-mix:" + parent.hash),
                blob_gas_used=0,
            )
            hashes.append(block.hash)
        return tuple(hashes)

    def set_pending_timestamp(self, timestamp: int) -> None:
        """The timestamp the next mined block (and the transaction in it) will see."""
        self.chain.header = self.chain.header.copy(timestamp=timestamp)

    def head_timestamp(self) -> int:
        """Timestamp of the latest mined block."""
        return int(self.chain.get_canonical_head().timestamp)


class EmbeddedChain(Chain):
    """An in-process chain, optionally persisted by a transaction journal."""

    def __init__(
        self,
        journal_path: Path | None = None,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        read_only: bool = False,
        snapshot_every: int = SNAPSHOT_EVERY,
        use_snapshot: bool = True,
    ) -> None:
        params = PyEVMBackend.generate_genesis_params(overrides={"timestamp": GENESIS_TIMESTAMP})
        self._backend = _DeterministicBackend(genesis_parameters=params)
        self._backend.chain.gas_estimator = _one_pass_gas_estimate
        self._tester = EthereumTester(backend=self._backend, auto_mine_transactions=True)
        super().__init__(
            Web3(EthereumTesterProvider(self._tester)),
            retry=retry,
            receipt_timeout=5.0,
            poll_interval=0.0,
            clock=clock,
            sleep=sleep,
        )
        self._lock = threading.RLock()
        self._snapshot_lock = threading.Lock()
        self._journal = Journal(journal_path) if journal_path is not None else None
        self._snapshot_path = (
            journal_path.with_suffix(".snapshot") if journal_path is not None else None
        )
        self._snapshot_every = snapshot_every
        self.replayed = 0  # journal entries re-executed at open
        self.restored = 0  # blocks taken from the snapshot instead
        self.read_only = read_only
        if self._journal is not None:
            # The snapshot first, then the journal: a snapshot is written only after its
            # blocks are in the journal, and the journal only grows, so the journal read
            # second covers it even while ``up`` goes on mining (chain info, verify).
            snap = self._read_snapshot() if use_snapshot else None
            entries = list(self._journal.read(truncate=not read_only))
            self.restored = self._restore(snap, entries) if snap is not None else 0
            for entry in entries[self.restored :]:
                self._apply(entry.timestamp, entry.raw_tx, expect=entry.block_hash)
                self.replayed += 1
        self._snapshot_height = self.restored

    def _read_snapshot(self) -> Snapshot | None:
        """The snapshot beside the journal, None if there is none or it is damaged."""
        if self._snapshot_path is None:
            return None
        try:
            return read_snapshot(self._snapshot_path)
        except LedgerConfigError as e:
            log.warning("chain snapshot unusable, replaying the whole journal: %s", e)
            return None

    def _restore(self, snap: Snapshot, entries: list[JournalEntry]) -> int:
        """Load the snapshot if it agrees with the journal; how many blocks it covers.

        Any disagreement (a head the journal does not record at that height, another genesis
        than this code builds, a database that does not end at that head or cannot be read)
        leaves the fresh genesis chain in place: the caller then replays the whole journal,
        which is slow but always right.
        """
        if snap.height == 0:
            return 0
        if snap.height > len(entries) or entries[snap.height - 1].block_hash != snap.head_hash:
            log.warning(
                "chain snapshot at block %d does not match the journal (%d blocks):"
                " replaying the whole journal",
                snap.height,
                len(entries),
            )
            return 0
        genesis = self._backend.chain.get_canonical_block_header_by_number(0).hash
        try:
            chain = type(self._backend.chain)(AtomicDB(MemoryDB(snap.kv)))
            head = chain.get_canonical_head()
            agrees = (
                head.block_number == snap.height
                and bytes(head.hash) == snap.head_hash
                and chain.get_canonical_block_header_by_number(0).hash == genesis
            )
        except Exception as e:  # a database py-evm cannot read (another version, damage)
            log.warning("chain snapshot cannot be loaded, replaying the whole journal: %r", e)
            return 0
        if not agrees:
            log.warning(
                "chain snapshot's database does not run from this genesis to block %d:"
                " replaying the whole journal",
                snap.height,
            )
            return 0
        chain.gas_estimator = _one_pass_gas_estimate
        self._backend.chain = chain
        return int(snap.height)

    def _take_snapshot(self) -> None:
        """Write a snapshot of the chain as it is now (the caller holds no lock; the copy of
        the database is taken under the submit lock, the writing happens outside it)."""
        if self._snapshot_path is None or self.read_only:
            return
        with self._snapshot_lock:  # one writer of the temporary file at a time
            with self._lock:
                head = self._backend.chain.get_canonical_head()
                height = int(head.block_number)
                if height <= self._snapshot_height:
                    return
                kv = dict(_memory_db(self._backend.chain).kv_store)  # one C-level copy
            self._snapshot_height = height  # a failed write is retried SNAPSHOT_EVERY later
            started = time.monotonic()
            size = write_snapshot(self._snapshot_path, height, bytes(head.hash), kv)
        log.info(
            "chain snapshot at block %d written (%.1f MB, %.1f s)",
            height,
            size / 1e6,
            time.monotonic() - started,
        )

    @property
    def genesis_accounts(self) -> list[LocalAccount]:
        """The deterministic, pre-funded genesis accounts (eth-tester's default keys)."""
        return [Account.from_key(k.to_bytes()) for k in self._backend.account_keys]

    def fund(self, address: str, wei: int, *, minimum: int | None = None) -> bool:
        """Send ``wei`` from genesis account 0 unless ``address`` holds ``minimum`` (default wei/2).

        Why journaled like everything else: a funding transfer is a block too; replaying it
        keeps balances and block hashes identical after a restart (and makes this idempotent).
        """
        if self.balance(address) >= (wei // 2 if minimum is None else minimum):
            return False
        self.send_value(self.genesis_accounts[0], address, wei)
        return True

    def submit(self, raw: bytes) -> bytes:
        """Mine ``raw`` in its own block at a pinned timestamp, then journal it (fsync'd)."""
        if self.read_only:
            raise LedgerConfigError("this embedded chain was opened read-only (a replayed copy)")
        with self._lock:
            timestamp = max(int(self.clock()), self._backend.head_timestamp() + 1)
            tx_hash, block_hash = self._apply(timestamp, raw, expect=None)
            if self._journal is not None:
                self._journal.append(JournalEntry(timestamp, block_hash, raw))
            due = self._backend.chain.get_canonical_head().block_number
        if self._journal is not None and due - self._snapshot_height >= self._snapshot_every:
            try:
                self._take_snapshot()
            except Exception as e:  # the block is mined and journaled: a snapshot is a shortcut
                log.warning("could not write the chain snapshot: %r", e)
        return tx_hash

    def _apply(self, timestamp: int, raw: bytes, *, expect: bytes | None) -> tuple[bytes, bytes]:
        self._backend.set_pending_timestamp(timestamp)
        try:
            tx_hash = self._tester.send_raw_transaction("0x" + raw.hex())
        except TesterValidationError as e:
            if expect is not None:
                raise LedgerConfigError(f"journal replay refused a transaction: {e}") from e
            raise LedgerError(f"transaction refused: {e}") from e
        block_hash = bytes(self._backend.chain.get_canonical_head().hash)
        if expect is not None and block_hash != expect:
            raise LedgerConfigError(
                f"journal replay diverged: block 0x{block_hash.hex()} != recorded 0x{expect.hex()}"
            )
        return bytes.fromhex(str(tx_hash).removeprefix("0x")), block_hash

    def close(self) -> None:
        """Snapshot what was mined since the last snapshot, then close the journal."""
        if self._journal is not None:
            try:
                self._take_snapshot()
            except Exception as e:  # the journal has every block: a snapshot is a shortcut
                log.warning("could not write the chain snapshot: %r", e)
            finally:
                self._journal.close()


def _memory_db(chain: Any) -> MemoryDB:
    """The in-memory key-value store under the chain's AtomicDB."""
    db = chain.chaindb.db
    wrapped = getattr(db, "wrapped_db", None)
    if not isinstance(wrapped, MemoryDB):
        raise LedgerError(f"unexpected chain database {type(db).__name__}: cannot snapshot it")
    return wrapped
