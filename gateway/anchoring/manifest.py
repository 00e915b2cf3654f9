"""What a study anchor commits to: manifest entries, their leaf bytes, the capsule, record ids.

Pure encoding, no I/O; the byte layouts are specified in docs/merkle.md and docs/ledger.md and
must never change for a given version tag, because anchored roots and capsules live forever on
a chain. Every variable-length field is length-prefixed, so no two different entries can
encode to the same bytes.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway import crypto
from gateway.errors import IntegrityError
from gateway.keys import study_key_info
from gateway.merkle import merkle_root

MANIFEST_FORMAT = "ztbridge-manifest-v1"
LEAF_VERSION = 1
CAPSULE_VERSION = 2
RECORD_ID_CONTEXT = b"ztbridge/record-id/v1\x00"
STUDY_ID_CONTEXT = b"ztbridge/study-id/v1\x00"
CAPSULE_INFO = b"ztbridge/capsule/v1/"
MANIFEST_KEY_INFO = b"ztbridge/manifest-key/v1/"
_U64 = struct.Struct(">Q")
_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class ManifestEntry:
    """One instance of a batch: the four anchored fields, plus where it sits locally.

    ``sha256`` is of the data set exactly as the sender encoded it (what the index keeps and
    what proves what the modality sent); ``size`` is of the decrypted object (our Part-10 file:
    preamble, our file meta group, that data set). ``sop_instance``, ``version`` and ``key_id``
    are in the encrypted manifest for the reader's convenience but are not in the leaf.
    """

    cid: str
    sha256: bytes
    size: int
    sop_class: str
    sop_instance: str
    version: int
    key_id: str


def leaf_bytes(entry: ManifestEntry) -> bytes:
    """``0x01 | u8 len | CID (ASCII) | SHA-256 (32) | u64be size | u8 len | SOP Class UID``."""
    cid = entry.cid.encode("ascii")
    sop = entry.sop_class.encode("ascii")
    if len(entry.sha256) != 32 or len(cid) > 255 or len(sop) > 255 or entry.size < 0:
        raise ValueError("manifest entry out of range")
    return (
        bytes((LEAF_VERSION, len(cid)))
        + cid
        + entry.sha256
        + _U64.pack(entry.size)
        + bytes((len(sop),))
        + sop
    )


def entries_root(entries: Sequence[ManifestEntry]) -> bytes:
    """The Merkle root over the entries' leaf bytes, in manifest order."""
    return merkle_root([leaf_bytes(e) for e in entries])


@dataclass(frozen=True)
class KeyWrap:
    """A study key's custodian wrap, carried in the manifest (readable with chain + store)."""

    key_id: str
    kem: str
    wrap: bytes


@dataclass(frozen=True)
class Manifest:
    """The plaintext of a batch manifest (stored encrypted under the batch's manifest key)."""

    record_id: bytes
    study_uid: str
    batch_no: int
    created_at: str
    entries: tuple[ManifestEntry, ...]
    key_wraps: tuple[KeyWrap, ...]

    @property
    def root(self) -> bytes:
        """The Merkle root this manifest commits to."""
        return entries_root(self.entries)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, UTF-8)."""
        doc = {
            "format": MANIFEST_FORMAT,
            "record_id": self.record_id.hex(),
            "study_uid": self.study_uid,
            "batch_no": self.batch_no,
            "created_at": self.created_at,
            "entries": [
                {
                    "cid": e.cid,
                    "sha256": e.sha256.hex(),
                    "size": e.size,
                    "sop_class": e.sop_class,
                    "sop_instance": e.sop_instance,
                    "version": e.version,
                    "key_id": e.key_id,
                }
                for e in self.entries
            ],
            "key_wraps": [
                {"key_id": w.key_id, "kem": w.kem, "wrap": base64.b64encode(w.wrap).decode()}
                for w in self.key_wraps
            ],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse ``to_bytes`` output; anything else is an IntegrityError."""
        try:
            doc = json.loads(data)
            if doc["format"] != MANIFEST_FORMAT:
                raise ValueError(doc["format"])
            return cls(
                record_id=bytes.fromhex(doc["record_id"]),
                study_uid=str(doc["study_uid"]),
                batch_no=int(doc["batch_no"]),
                created_at=str(doc["created_at"]),
                entries=tuple(
                    ManifestEntry(
                        cid=str(e["cid"]),
                        sha256=bytes.fromhex(e["sha256"]),
                        size=int(e["size"]),
                        sop_class=str(e["sop_class"]),
                        sop_instance=str(e["sop_instance"]),
                        version=int(e["version"]),
                        key_id=str(e["key_id"]),
                    )
                    for e in doc["entries"]
                ),
                key_wraps=tuple(
                    KeyWrap(str(w["key_id"]), str(w["kem"]), base64.b64decode(w["wrap"]))
                    for w in doc["key_wraps"]
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"not a ztbridge manifest: {e}") from e


@dataclass(frozen=True)
class Capsule:
    """What the record owner needs to read a record from the chain and the store alone.

    Version 2 (written now): ``study_key_wraps`` holds, for every study key the batch's
    instances use, the owner's own wrap of it as read from the index (``key_wraps``), so the
    capsule is complete whatever happened between ingest and sealing: the gateway never has to
    hold a plaintext study key to seal a batch. Version 1 (older records, still read):
    ``study_keys`` holds the plaintext keys that were still in memory when the batch was
    sealed, often none. ``open_study_keys`` gives the keys of either.
    """

    manifest_cid: str
    manifest_key_id: bytes
    manifest_key: bytes
    study_keys: tuple[tuple[bytes, bytes], ...] = ()
    study_key_wraps: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def version(self) -> int:
        """1 for a legacy capsule carrying plaintext keys, else 2."""
        return 1 if self.study_keys else CAPSULE_VERSION

    def to_bytes(self) -> bytes:
        """v2: ``0x02 | key id (16) | key (32) | u8 n | n x (key id 16 | u16be len | wrap)
        | CID (ASCII)``; v1 (only when ``study_keys`` is given): ``0x01 | key id | key | u8 n
        | n x (key id 16 | key 32) | CID``."""
        if len(self.manifest_key_id) != 16 or len(self.manifest_key) != 32:
            raise ValueError("manifest key id must be 16 bytes and key 32 bytes")
        if self.study_keys and self.study_key_wraps:
            raise ValueError("a capsule carries plaintext keys (v1) or wraps (v2), not both")
        items = self.study_keys or self.study_key_wraps
        if len(items) > 255:
            raise ValueError("too many study keys in one capsule")
        out = bytearray((self.version,))
        out += self.manifest_key_id + self.manifest_key + bytes((len(items),))
        for key_id, value in items:
            if len(key_id) != 16:
                raise ValueError("study key id must be 16 bytes")
            if self.study_keys:
                if len(value) != 32:
                    raise ValueError("study key must be 32 bytes")
                out += key_id + value
            else:
                if not 0 < len(value) < 1 << 16:
                    raise ValueError("study key wrap out of range")
                out += key_id + _U16.pack(len(value)) + value
        out += self.manifest_cid.encode("ascii")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Capsule:
        """Parse ``to_bytes`` output (either version); anything else is an IntegrityError."""
        if len(data) < 50 or data[0] not in (1, CAPSULE_VERSION):
            raise IntegrityError("not a ztbridge capsule")
        n = data[49]
        pos = 50
        items: list[tuple[bytes, bytes]] = []
        for _ in range(n):
            key_id = data[pos : pos + 16]
            if data[0] == 1:
                size, start = 32, pos + 16
            else:
                if len(data) < pos + 18:
                    raise IntegrityError("capsule truncated")
                size, start = _U16.unpack_from(data, pos + 16)[0], pos + 18
            pos = start + size
            if len(data) <= pos:
                raise IntegrityError("capsule truncated")
            items.append((key_id, data[start:pos]))
        try:
            cid = data[pos:].decode("ascii")
        except UnicodeDecodeError as e:
            raise IntegrityError("capsule CID is not ASCII") from e
        if data[0] == 1:
            return cls(cid, data[1:17], data[17:49], tuple(items))
        return cls(cid, data[1:17], data[17:49], (), tuple(items))

    def open_study_keys(self, pair: crypto.KeyPair) -> tuple[tuple[bytes, bytes], ...]:
        """(key id, study key) for every study key the capsule carries, with the owner's key
        pair (v2 wraps are opened with it; v1 keys are in clear inside the capsule)."""
        if self.study_keys:
            return self.study_keys
        return tuple(
            (key_id, crypto.unwrap(pair, wrap, study_key_info(key_id.hex())))
            for key_id, wrap in self.study_key_wraps
        )


def record_id(secret: bytes, study_uid: str, batch_no: int) -> bytes:
    """The on-chain name of a study batch: a keyed hash, never the UID itself."""
    message = RECORD_ID_CONTEXT + study_uid.encode("ascii") + b"\x00" + str(batch_no).encode()
    return crypto.keyed_hash(secret, message)


def study_id(secret: bytes, study_uid: str) -> bytes:
    """The on-chain name of a study (what grants and ownership are per): a keyed hash.

    Why a keyed hash and not a random id kept in the index: it is as opaque (nobody without
    the gateway's record-id secret can confirm a guessed UID, nor link it to one), needs no
    table, no backup and no lookup on the anchoring path, and is the same on every chain the
    study is ever anchored to. Domain-separated from record ids, so no record id is a study id.
    """
    return crypto.keyed_hash(secret, STUDY_ID_CONTEXT + study_uid.encode("ascii"))


def capsule_info(record: bytes) -> bytes:
    """HPKE ``info`` for a capsule: binds it to its record id (no moving it to another)."""
    return CAPSULE_INFO + record.hex().encode()


def manifest_key_info(key_id_hex: str) -> bytes:
    """HPKE ``info`` for the custodian's wrap of a manifest key."""
    return MANIFEST_KEY_INFO + key_id_hex.encode()
