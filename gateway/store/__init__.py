"""Content-addressed storage of ciphertext objects (IPFS-compatible CIDs)."""

from gateway.store.base import ContentStore, StoreProblem
from gateway.store.blockstore import PackBlockStore

__all__ = ["ContentStore", "PackBlockStore", "StoreProblem"]
