"""Merkle trees over a batch's manifest entries: the one hash a study anchors on-chain.

SHA-256 with domain separation, so a leaf can never be passed off as an inner node (the
second-preimage trick against naive trees): leaf = H(0x00 || data), node = H(0x01 || l || r).
An odd node at the end of a level is carried up unchanged rather than paired with itself,
so two different leaf lists never share a root by duplication (the CVE-2012-2459 pattern).
Pure functions; documented in docs/merkle.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

LEAF = b"\x00"
NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash of one leaf's bytes."""
    return hashlib.sha256(LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node from its two children."""
    return hashlib.sha256(NODE + left + right).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = [leaf_hash(x) for x in leaves]
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The root over ``leaves`` in the given order."""
    return _levels(leaves)[-1][0]


@dataclass(frozen=True)
class ProofStep:
    """A sibling hash and whether it sits to the left of the running hash."""

    sibling: bytes
    sibling_is_left: bool


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[ProofStep]:
    """Siblings from leaf ``index`` up to the root (carried-up levels add no step)."""
    if not 0 <= index < len(leaves):
        raise IndexError(index)
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(ProofStep(level[sibling], sibling_is_left=sibling < index))
        index //= 2
    return proof


def verify_inclusion(data: bytes, proof: Sequence[ProofStep], root: bytes) -> bool:
    """Whether ``data`` is a leaf of the tree with ``root``, by ``proof``."""
    running = leaf_hash(data)
    for step in proof:
        running = (
            node_hash(step.sibling, running)
            if step.sibling_is_left
            else node_hash(running, step.sibling)
        )
    return running == root
