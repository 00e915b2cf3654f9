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
from gateway.merkle import merkle_root

MANIFEST_FORMAT = "ztbridge-manifest-v1"
LEAF_VERSION = 1
CAPSULE_VERSION = 1
RECORD_ID_CONTEXT = b"ztbridge/record-id/v1\x00"
CAPSULE_INFO = b"ztbridge/capsule/v1/"
MANIFEST_KEY_INFO = b"ztbridge/manifest-key/v1/"
_U64 = struct.Struct(">Q")


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

    ``study_keys`` holds the keys that were still in memory when the batch was sealed (the
    normal case); a batch sealed later (after a restart) carries none, and its reader unwraps
    them from the manifest's custodian wraps instead (see docs/ledger.md).
    """

    manifest_cid: str
    manifest_key_id: bytes
    manifest_key: bytes
    study_keys: tuple[tuple[bytes, bytes], ...] = ()

    def to_bytes(self) -> bytes:
        """``0x01 | key id (16) | key (32) | u8 n | n x (key id 16 | key 32) | CID (ASCII)``."""
        if len(self.manifest_key_id) != 16 or len(self.manifest_key) != 32:
            raise ValueError("manifest key id must be 16 bytes and key 32 bytes")
        if len(self.study_keys) > 255:
            raise ValueError("too many study keys in one capsule")
        out = bytearray((CAPSULE_VERSION,))
        out += self.manifest_key_id + self.manifest_key + bytes((len(self.study_keys),))
        for key_id, key in self.study_keys:
            if len(key_id) != 16 or len(key) != 32:
                raise ValueError("study key id must be 16 bytes and key 32 bytes")
            out += key_id + key
        out += self.manifest_cid.encode("ascii")
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Capsule:
        """Parse ``to_bytes`` output; anything else is an IntegrityError."""
        if len(data) < 50 or data[0] != CAPSULE_VERSION:
            raise IntegrityError("not a ztbridge capsule")
        n = data[49]
        end = 50 + 48 * n
        if len(data) <= end:
            raise IntegrityError("capsule truncated")
        keys = tuple((data[i : i + 16], data[i + 16 : i + 48]) for i in range(50, end, 48))
        try:
            cid = data[end:].decode("ascii")
        except UnicodeDecodeError as e:
            raise IntegrityError("capsule CID is not ASCII") from e
        return cls(cid, data[1:17], data[17:49], keys)


def record_id(secret: bytes, study_uid: str, batch_no: int) -> bytes:
    """The on-chain name of a study batch: a keyed hash, never the UID itself."""
    message = RECORD_ID_CONTEXT + study_uid.encode("ascii") + b"\x00" + str(batch_no).encode()
    return crypto.keyed_hash(secret, message)


def capsule_info(record: bytes) -> bytes:
    """HPKE ``info`` for a capsule: binds it to its record id (no moving it to another)."""
    return CAPSULE_INFO + record.hex().encode()


def manifest_key_info(key_id_hex: str) -> bytes:
    """HPKE ``info`` for the custodian's wrap of a manifest key."""
    return MANIFEST_KEY_INFO + key_id_hex.encode()
