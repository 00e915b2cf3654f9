"""Merkle roots and proofs: fixed vectors, every proof verifies, tampering never does."""

from __future__ import annotations

import hashlib

import pytest

from gateway.merkle import (
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)


def h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def test_known_shapes() -> None:
    a, b, c = b"a", b"b", b"c"
    assert merkle_root([a]) == h(b"\x00a")
    assert merkle_root([a, b]) == h(b"\x01" + h(b"\x00a") + h(b"\x00b"))
    # odd leaf carried up, not duplicated
    assert merkle_root([a, b, c]) == node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))


def test_no_duplication_collision() -> None:
    assert merkle_root([b"a", b"b", b"c"]) != merkle_root([b"a", b"b", b"c", b"c"])


def test_leaf_cannot_pose_as_node() -> None:
    """A one-leaf tree whose data is two child hashes does not share the two-leaf root."""
    forged = leaf_hash(b"a") + leaf_hash(b"b")
    assert merkle_root([forged]) != merkle_root([b"a", b"b"])


def test_order_matters_and_empty_refused() -> None:
    assert merkle_root([b"a", b"b"]) != merkle_root([b"b", b"a"])
    with pytest.raises(ValueError):
        merkle_root([])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 100, 513])
def test_every_proof_verifies_and_tamper_fails(n: int) -> None:
    leaves = [f"entry-{i}".encode() for i in range(n)]
    root = merkle_root(leaves)
    for i in range(n):
        proof = inclusion_proof(leaves, i)
        assert verify_inclusion(leaves[i], proof, root)
        assert not verify_inclusion(leaves[i] + b"x", proof, root)
        if n > 1:
            assert not verify_inclusion(leaves[(i + 1) % n], proof, root)
