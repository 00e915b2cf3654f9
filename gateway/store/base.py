"""What every content store backend offers: put bytes, get them back verified, export CAR.

Backends: ``blockstore`` (embedded, pack files on local disk) and, later, ``kubo`` (a Kubo
node through its HTTP RPC API). Both must produce the CIDs that ``ipfs add --cid-version=1``
gives for the same bytes (UnixFS, raw leaves, sha2-256, 256 KiB chunks, balanced layout of at
most 174 links a node), so an object can move between them and keep its address.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True)
class StoreProblem:
    """One thing ``verify`` found wrong: which block or object, and what."""

    cid: str
    problem: str


class PendingObject(Protocol):
    """An object handed to the store whose flush to stable storage may still be running."""

    @property
    def cid(self) -> str:
        """The object's root CID."""
        ...

    def wait(self) -> None:
        """Return once the object is durable; raise StorageError if it cannot be made so."""
        ...


class ContentStore(Protocol):
    """A content-addressed object store.

    ``put`` is durable on return: when it returns, every block of the object is on stable
    storage (fsync'd), so the caller may acknowledge the object to its sender.
    """

    def put(self, data: bytes | bytearray | memoryview) -> str:
        """Store ``data`` as a UnixFS file; return its root CID (CIDv1, base32 string)."""
        ...

    def put_nowait(self, data: bytes | bytearray | memoryview) -> PendingObject:
        """Start storing ``data``; the caller overlaps its own work with the flush, then waits.

        The object is not durable (and not visible to ``get``) until ``wait()`` returns.
        """
        ...

    def put_many_nowait(
        self, objects: Sequence[bytes | bytearray | memoryview]
    ) -> Sequence[PendingObject]:
        """``put_nowait`` of several objects at once, sharing one flush; CIDs in order."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the object's bytes, every block checked against its CID on the way.

        Holds the whole object: for small ones (manifests, headers); ``open`` streams.

        Raises NotFoundError when a block is missing, IntegrityError when one does not match.
        """
        ...

    def open(self, cid: str) -> Iterator[bytes]:
        """Stream the object's bytes block by block, each block checked against its CID
        before any of it is yielded; memory is bounded by a block, not the object.

        Raises NotFoundError / IntegrityError when the walk reaches a missing or damaged
        block, after the earlier blocks were yielded (treat that as a failed read).
        """
        ...

    def open_range(self, cid: str, start: int, end: int) -> Iterator[bytes]:
        """Stream bytes ``start``..``end`` of the object, reading only the blocks that hold
        them, each checked against its CID (as ``open``)."""
        ...

    def has(self, cid: str) -> bool:
        """Whether the root block of ``cid`` is present."""
        ...

    def complete(self, cid: str) -> bool:
        """Whether every block of ``cid`` is present (inner nodes are read, leaves only
        looked up): the check crash recovery runs on rows that may have committed before
        their object was durable (``gateway.settling``)."""
        ...

    def export_car(self, roots: Iterable[str], out: BinaryIO) -> int:
        """Write a CARv1 holding every block reachable from ``roots``; return blocks written."""
        ...

    def verify(self) -> Iterator[StoreProblem]:
        """Re-read every stored block and yield each one that does not match its CID."""
        ...

    def close(self) -> None:
        """Release files and handles."""
        ...
