"""Manifest leaves, manifests and capsules: exact bytes, round trips, refusals."""

from __future__ import annotations

import hashlib

import pytest

from gateway import crypto
from gateway.anchoring.manifest import (
    Capsule,
    KeyWrap,
    Manifest,
    ManifestEntry,
    capsule_info,
    entries_root,
    leaf_bytes,
    record_id,
    study_id,
)
from gateway.errors import IntegrityError, InvalidEnvelopeError
from gateway.keys import study_key_info
from gateway.merkle import leaf_hash, merkle_root, node_hash

CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
CT = "1.2.840.10008.5.1.4.1.1.2"


def entry(n: int = 1, **changes: object) -> ManifestEntry:
    fields: dict[str, object] = {
        "cid": CID,
        "sha256": hashlib.sha256(f"data set {n}".encode()).digest(),
        "size": 1000 + n,
        "sop_class": CT,
        "sop_instance": f"1.2.3.{n}",
        "version": 1,
        "key_id": "ab" * 16,
    }
    fields.update(changes)
    return ManifestEntry(**fields)  # type: ignore[arg-type]


def test_leaf_bytes_layout() -> None:
    e = entry()
    expected = (
        b"\x01"
        + bytes((len(CID),))
        + CID.encode()
        + e.sha256
        + (1001).to_bytes(8, "big")
        + bytes((len(CT),))
        + CT.encode()
    )
    assert leaf_bytes(e) == expected
    # Fields outside the leaf do not move the root; every field inside does.
    assert leaf_bytes(entry(sop_instance="9.9", version=3, key_id="cd" * 16)) == expected
    for changed in (
        entry(cid=CID[:-1] + "a"),
        entry(sha256=b"\x00" * 32),
        entry(size=1002),
        entry(sop_class=CT + ".1"),
    ):
        assert leaf_bytes(changed) != expected


def test_root_over_entries_in_order() -> None:
    a, b, c = entry(1), entry(2), entry(3)
    la, lb, lc = (leaf_hash(leaf_bytes(x)) for x in (a, b, c))
    assert entries_root([a, b, c]) == node_hash(node_hash(la, lb), lc)
    assert entries_root([a, b, c]) != entries_root([b, a, c])
    assert entries_root([a]) == merkle_root([leaf_bytes(a)])


@pytest.mark.parametrize(
    "bad",
    [entry(sha256=b"\x00" * 31), entry(size=-1), entry(cid="b" * 256), entry(sop_class="1" * 256)],
)
def test_leaf_refuses_out_of_range(bad: ManifestEntry) -> None:
    with pytest.raises(ValueError):
        leaf_bytes(bad)


def test_manifest_round_trip_and_refusals() -> None:
    m = Manifest(
        record_id=b"\x07" * 32,
        study_uid="1.2.3",
        batch_no=2,
        created_at="2026-01-01T00:00:00+00:00",
        entries=(entry(1), entry(2)),
        key_wraps=(KeyWrap("ab" * 16, "x25519", b"wrapped"),),
    )
    data = m.to_bytes()
    assert Manifest.from_bytes(data) == m
    assert Manifest.from_bytes(data).root == entries_root(m.entries)
    for bad in (b"", b"{}", b"not json", data.replace(b"ztbridge-manifest-v1", b"other")):
        with pytest.raises(IntegrityError):
            Manifest.from_bytes(bad)


def test_capsule_round_trip_and_refusals() -> None:
    cap = Capsule(CID, b"\x01" * 16, b"\x02" * 32, ((b"\x03" * 16, b"\x04" * 32),))
    data = cap.to_bytes()
    assert len(data) == 1 + 16 + 32 + 1 + 48 + len(CID)
    assert Capsule.from_bytes(data) == cap
    empty = Capsule(CID, b"\x01" * 16, b"\x02" * 32)
    assert Capsule.from_bytes(empty.to_bytes()) == empty
    for bad in (b"", data[:49], b"\x02" + data[1:], data[: 50 + 48]):
        with pytest.raises(IntegrityError):
            Capsule.from_bytes(bad)
    with pytest.raises(ValueError):
        Capsule(CID, b"\x01" * 15, b"\x02" * 32).to_bytes()


def test_capsule_v2_carries_the_owners_wraps() -> None:
    """Version 2 (what sealing writes): wraps, not keys; they open with the owner's pair."""
    owner = crypto.generate_keypair("x25519")
    key_ids = [b"\x05" * 16, b"\x06" * 16]
    keys = [b"\x07" * 32, b"\x08" * 32]
    wraps = tuple(
        (k, crypto.wrap(owner.public, owner.kem, key, study_key_info(k.hex())))
        for k, key in zip(key_ids, keys, strict=True)
    )
    cap = Capsule(CID, b"\x01" * 16, b"\x02" * 32, study_key_wraps=wraps)
    data = cap.to_bytes()
    assert data[0] == 2 and cap.version == 2
    assert len(data) == 1 + 16 + 32 + 1 + sum(16 + 2 + len(w) for _, w in wraps) + len(CID)
    parsed = Capsule.from_bytes(data)
    assert parsed == cap and parsed.study_keys == ()
    assert parsed.open_study_keys(owner) == tuple(zip(key_ids, keys, strict=True))
    with pytest.raises(InvalidEnvelopeError):  # somebody else's key opens nothing
        parsed.open_study_keys(crypto.generate_keypair("x25519"))
    # Version 1 (older records) still parses, and its keys are in clear.
    v1 = Capsule(CID, b"\x01" * 16, b"\x02" * 32, ((b"\x03" * 16, b"\x04" * 32),))
    assert Capsule.from_bytes(v1.to_bytes()).open_study_keys(owner) == v1.study_keys
    for bad in (b"\x03" + data[1:], data[:60], data[: len(data) - len(CID)]):
        with pytest.raises(IntegrityError):
            Capsule.from_bytes(bad)
    with pytest.raises(ValueError):  # one or the other, never both
        Capsule(CID, b"\x01" * 16, b"\x02" * 32, v1.study_keys, wraps).to_bytes()


def test_study_ids_are_keyed_per_study_and_not_record_ids() -> None:
    secret = b"\x11" * 32
    sid = study_id(secret, "1.2.3")
    assert len(sid) == 32 and sid == study_id(secret, "1.2.3")
    assert sid != study_id(secret, "1.2.4") and sid != study_id(b"\x22" * 32, "1.2.3")
    assert sid not in {record_id(secret, "1.2.3", n) for n in range(1, 5)}


def test_record_ids_are_keyed_and_distinct() -> None:
    secret, other = b"\x11" * 32, b"\x22" * 32
    rid = record_id(secret, "1.2.3", 1)
    assert len(rid) == 32
    assert rid != hashlib.sha256(b"1.2.3").digest()
    assert rid != record_id(other, "1.2.3", 1)  # no key, no link to the UID
    assert rid != record_id(secret, "1.2.3", 2)  # one id per batch
    assert rid != record_id(secret, "1.2.31", 1)
    assert rid == record_id(secret, "1.2.3", 1)
    assert capsule_info(rid).endswith(rid.hex().encode())
