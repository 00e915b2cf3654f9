"""The one read funnel: an instance back out of the store as verified, decrypted Part-10 bytes.

Export, verify and (later) WADO-RS all read through here, so every read checks the same
things and nothing else opens an instance envelope:

1. every block against its CID (``ContentStore.open``), before any byte of it is used;
2. every envelope segment's GCM tag (``crypto.open_stream``), before its plaintext is used;
   the last segment's nonce flag catches truncation and appended data;
3. the plaintext against the index: its length (``instances.size``) and the SHA-256 of the
   data set after our file meta group (``instances.sha256``, which ingest computes over the
   data set exactly as the sender encoded it).

(1) and (2) hold per chunk; (3) only at the end, so the last chunk is held back until the
hash is checked: a consumer that writes chunks to a file gets an exception before the last
bytes, and never a complete-looking file whose content differs from what was recorded.
Memory is bounded by a block plus a segment, whatever the instance's size (v1 objects,
stored before segmented envelopes, are the exception: one tag over everything means the
whole ciphertext is held once).

Dependencies are narrow on purpose: an ``InstanceRef`` (what the index says), a
``ContentStore``, and a ``KeyProvider`` (``study_key(key_id)``). Today's provider is
``CustodianKeys`` (the custodian wrap in ``study_keys`` opened with the unlocked custodian
pair); a user's unlocked key can be another, later.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from gateway import crypto, metrics
from gateway.dataset import split_part10
from gateway.errors import (
    DatasetRefusedError,
    InstanceIntegrityError,
    InstanceMissingError,
    IntegrityError,
    InvalidEnvelopeError,
    InvalidInputError,
    KeyUnavailableError,
    NotFoundError,
    RetrieveError,
    StorageError,
)
from gateway.header import header_from_part10
from gateway.index.database import Database
from gateway.index.models import instances
from gateway.keys import study_key_info
from gateway.keywraps import CUSTODIAN, wraps_for
from gateway.store.base import ContentStore

_META_FIXED = 144  # preamble (128) + "DICM" + the group length element (12)
MAX_HEADER_BYTES = 64 << 20
"""Most bytes a header cut from an old object may buffer before its end is found."""


@dataclass(frozen=True)
class InstanceRef:
    """What the index (or an anchored manifest) says about one stored instance version."""

    sop_instance_uid: str
    version: int
    cid: str
    key_id: str
    sha256: str  # hex SHA-256 of the data set after the file meta group
    size: int | None  # plaintext bytes (file meta + data set); None: not checked
    header_cid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    transfer_syntax: str | None = None  # as stored (the index's); None: not known
    sop_class_uid: str | None = None
    stored_size: int | None = None  # ciphertext bytes (the envelope); None: not known

    @classmethod
    def from_row(cls, row: Any) -> InstanceRef:
        """From an ``instances`` row (a Row or its mapping)."""
        m = row._mapping if hasattr(row, "_mapping") else row
        return cls(
            sop_instance_uid=str(m["sop_instance_uid"]),
            version=int(m["version"]),
            cid=str(m["cid"]),
            key_id=str(m["key_id"]),
            sha256=str(m["sha256"]),
            size=int(m["size"]),
            header_cid=m.get("header_cid"),
            study_uid=m.get("study_uid"),
            series_uid=m.get("series_uid"),
            transfer_syntax=m.get("transfer_syntax"),
            sop_class_uid=m.get("sop_class_uid"),
            stored_size=m.get("stored_size"),
        )

    @property
    def label(self) -> str:
        """The SOP Instance UID, with the version when it is not the first."""
        return self.sop_instance_uid + ("" if self.version == 1 else f" (version {self.version})")


def find_instance(db: Database, sop_instance_uid: str, version: int | None = None) -> InstanceRef:
    """The index's reference for an instance: the given version, or the latest one."""
    query = select(instances).where(instances.c.sop_instance_uid == sop_instance_uid)
    if version is not None:
        query = query.where(instances.c.version == version)
    with db.read() as conn:
        row = conn.execute(query.order_by(instances.c.version.desc()).limit(1)).first()
    if row is None:
        raise InstanceMissingError(sop_instance_uid, "missing", "not in the index")
    return InstanceRef.from_row(row)


def study_refs(db: Database, study_uid: str) -> list[InstanceRef]:
    """The newest version of every instance of a study, by series then instance number:
    what a download of the study holds (an archive is what the study is now)."""
    with db.read() as conn:
        rows = conn.execute(
            select(instances)
            .where(instances.c.study_uid == study_uid)
            .order_by(
                instances.c.series_uid,
                instances.c.instance_number,
                instances.c.sop_instance_uid,
                instances.c.version.desc(),
            )
        ).all()
    newest: dict[str, InstanceRef] = {}
    for row in rows:
        newest.setdefault(str(row.sop_instance_uid), InstanceRef.from_row(row))
    return list(newest.values())


class KeyProvider(Protocol):
    """Gives the study key for a key id, or raises KeyUnavailableError."""

    def study_key(self, key_id: str) -> bytes:
        """The 32-byte study key named ``key_id``."""
        ...


class CustodianKeys:
    """Study keys opened from their custodian wraps (``keywraps.wraps_for``) with the custodian
    pair.

    Keys are cached per key id for the provider's life (one export or verify run). ``add``
    and ``add_wrap`` let ``verify`` supply keys from an anchored capsule or manifest first.
    """

    def __init__(self, db: Database, custodian: crypto.KeyPair) -> None:
        self._db = db
        self._pair = custodian
        self._keys: dict[str, bytes] = {}

    def add(self, key_id: str, key: bytes) -> None:
        """A key known from elsewhere (an anchored capsule)."""
        self._keys.setdefault(key_id, key)

    def add_wrap(self, key_id: str, wrap: bytes) -> bool:
        """Open a wrap with the custodian pair; False if it is not ours or is damaged."""
        if key_id in self._keys:
            return True
        try:
            self._keys[key_id] = crypto.unwrap(self._pair, wrap, study_key_info(key_id))
        except InvalidEnvelopeError:
            return False
        return True

    def study_key(self, key_id: str) -> bytes:
        """The study key, from the cache or the index's custodian wrap."""
        if key_id not in self._keys:
            with self._db.read() as conn:
                found = wraps_for(conn, [key_id], CUSTODIAN)
            if key_id not in found:
                raise KeyUnavailableError(f"study key {key_id} is not in the index")
            if not self.add_wrap(key_id, found[key_id].wrap):
                raise KeyUnavailableError(f"study key {key_id} cannot be unwrapped")
        return self._keys[key_id]


@dataclass
class Observed:
    """What a read found, filled in as it streams (for reports that compare, like verify)."""

    transfer_syntax: str | None = None
    sop_class: str | None = None
    sop_instance: str | None = None
    size: int = 0
    sha256: str | None = None  # set once the whole object was read


def _damaged(ref: InstanceRef, kind: str, what: str) -> InstanceIntegrityError:
    return InstanceIntegrityError(ref.label, kind, what)


def _key(ref: InstanceRef, keys: KeyProvider) -> bytes:
    try:
        return keys.study_key(ref.key_id)
    except KeyUnavailableError as e:
        raise RetrieveError(ref.label, "key", str(e)) from e


def _store_failure(ref: InstanceRef, cid: str, e: Exception) -> RetrieveError:
    """A store or envelope failure as a RetrieveError of the right kind."""
    if isinstance(e, NotFoundError):
        return InstanceMissingError(ref.label, "missing", f"stored object {cid} is missing ({e})")
    if isinstance(e, IntegrityError):
        return _damaged(ref, "damaged", f"stored object {cid} is damaged: {e}")
    if isinstance(e, InvalidEnvelopeError):
        return _damaged(ref, "unauthentic", f"stored object {cid} fails authentication")
    if isinstance(e, InvalidInputError):
        return _damaged(ref, "damaged", f"the index names no valid CID ({cid!r})")
    return RetrieveError(ref.label, "unreadable", f"stored object {cid} cannot be read: {e}")


_STORE_ERRORS = (StorageError, NotFoundError, InvalidEnvelopeError, InvalidInputError)


class Retrieval:
    """A verified read in progress: iterate for the Part-10 bytes; ``observed`` on the side.

    Iterating raises a RetrieveError (InstanceIntegrityError, InstanceMissingError, ...) at
    the first failed check; the last chunk only comes after the size and hash are checked.
    """

    def __init__(self, ref: InstanceRef, store: ContentStore, keys: KeyProvider) -> None:
        self.ref = ref
        self.observed = Observed()
        self._chunks = self._stream(store, keys)

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def read(self) -> bytes:
        """The whole object (for small ones; it is all held at once)."""
        return b"".join(self._chunks)

    def _stream(self, store: ContentStore, keys: KeyProvider) -> Iterator[bytes]:
        ref, seen = self.ref, self.observed
        started = time.perf_counter()
        key = _key(ref, keys)
        digest = hashlib.sha256()
        head: bytearray | None = bytearray()
        held: bytes | None = None
        try:
            for chunk in crypto.open_stream(key, store.open(ref.cid)):
                seen.size += len(chunk)
                if head is not None:  # still gathering the file meta group
                    head += chunk
                    meta_end = self._meta_end(head)
                    if meta_end is None:
                        continue
                    digest.update(memoryview(head)[meta_end:])
                    chunk, head = bytes(head), None
                else:
                    digest.update(chunk)
                if held is not None:
                    yield held
                held = chunk
        except _STORE_ERRORS as e:
            raise _store_failure(ref, ref.cid, e) from e
        if head is not None or held is None:
            raise _damaged(ref, "format", "decrypted object is shorter than a Part-10 header")
        seen.sha256 = digest.hexdigest()
        if ref.size is not None and seen.size != ref.size:
            raise _damaged(
                ref, "size", f"decrypted size {seen.size} differs from the recorded {ref.size}"
            )
        if seen.sha256 != ref.sha256:
            raise _damaged(ref, "hash", "SHA-256 of the decrypted data set differs from the record")
        metrics.retrieved(seen.size, time.perf_counter() - started)
        yield held

    def _meta_end(self, head: bytearray) -> int | None:
        """Where the file meta group ends once ``head`` holds it all (parsed then), else None."""
        if len(head) < _META_FIXED:
            return None
        end = _META_FIXED + int.from_bytes(head[140:144], "little")
        if len(head) < end:
            if end > MAX_HEADER_BYTES:
                raise _damaged(self.ref, "format", "file meta group length is implausible")
            return None
        try:
            meta = parse_file_meta(memoryview(head)[:end])
        except ValueError as e:
            raise _damaged(
                self.ref, "format", f"decrypted object is not a Part-10 file: {e}"
            ) from e
        self.observed.transfer_syntax = meta.get(0x0010)
        self.observed.sop_class = meta.get(0x0002)
        self.observed.sop_instance = meta.get(0x0003)
        return end


_META_UIDS = {0x0002, 0x0003, 0x0010}


def parse_file_meta(meta: bytes | memoryview) -> dict[int, str]:
    """The UIDs of a Part-10 file meta group (element number in group 0002 -> value).

    Hand-parsed (explicit VR little endian, as PS3.10 fixes it): pydicom's reader costs
    ~140 us, a quarter of streaming a CT slice. ``meta`` is the preamble through the end of
    the group exactly; ValueError if it is not one.
    """
    if len(meta) < _META_FIXED or bytes(meta[128:132]) != b"DICM":
        raise ValueError("no 'DICM' marker after the preamble")
    found: dict[int, str] = {}
    pos, end = 132, len(meta)
    while pos < end:
        if end - pos < 8:
            raise ValueError("truncated file meta element")
        group = int.from_bytes(meta[pos : pos + 2], "little")
        elem = int.from_bytes(meta[pos + 2 : pos + 4], "little")
        vr = bytes(meta[pos + 4 : pos + 6])
        if group != 0x0002:
            raise ValueError("element outside group 0002 in the file meta group")
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR", b"OD", b"OF", b"OL", b"OV"):
            if end - pos < 12:
                raise ValueError("truncated file meta element")
            length = int.from_bytes(meta[pos + 8 : pos + 12], "little")
            value = pos + 12
        else:
            length = int.from_bytes(meta[pos + 6 : pos + 8], "little")
            value = pos + 8
        if value + length > end:
            raise ValueError("file meta element overruns the group")
        if elem in _META_UIDS:
            found[elem] = bytes(meta[value : value + length]).rstrip(b"\0 ").decode("ascii")
        pos = value + length
    if 0x0010 not in found:
        raise ValueError("file meta information has no Transfer Syntax UID")
    return found


def retrieve(ref: InstanceRef, store: ContentStore, keys: KeyProvider) -> Retrieval:
    """Stream the verified, decrypted Part-10 bytes of one instance (see module doc)."""
    return Retrieval(ref, store, keys)


def retrieve_header(ref: InstanceRef, store: ContentStore, keys: KeyProvider) -> bytes:
    """The instance's header object: Part-10 file meta + data set without bulk data.

    From ``header_cid`` (one small object) when the row has one. Rows stored before header
    objects existed, or whose header object is not in this store (a store rebuilt from a
    CAR export, which carries instance objects only), get the same bytes cut from the
    instance object, read only up to the cut. Either way blocks are checked against their
    CID and segments against their tags, and the header must name this SOP Instance UID.
    The data set hash cannot be checked without reading the pixels; it is not.
    """
    key = _key(ref, keys)
    if ref.header_cid:
        try:
            plain = crypto.open_sealed(key, store.get(ref.header_cid))
        except NotFoundError:
            plain = None
        except _STORE_ERRORS as e:
            raise _store_failure(ref, ref.header_cid, e) from e
    else:
        plain = None
    if plain is None:
        try:
            stream = crypto.open_stream(key, store.open(ref.cid))
            try:
                plain = header_from_part10(stream, MAX_HEADER_BYTES)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()  # stop the walk over the rest of the object now
        except _STORE_ERRORS as e:
            raise _store_failure(ref, ref.cid, e) from e
        except DatasetRefusedError as e:
            raise _damaged(ref, "format", f"no header can be cut from the object: {e}") from e
    try:
        named = split_part10(plain).sop_instance
    except DatasetRefusedError as e:
        raise _damaged(ref, "format", f"header object is not a Part-10 file: {e.reason}") from e
    if named != ref.sop_instance_uid:
        raise _damaged(ref, "format", "header object belongs to another instance")
    return plain


def retrieve_range(
    ref: InstanceRef, store: ContentStore, keys: KeyProvider, start: int, end: int
) -> bytes:
    """Plaintext bytes ``start``..``end`` of an instance (file meta included), reading and
    decrypting only the blocks and segments that hold them: a frame of a large instance
    without the rest. Every block read is checked against its CID and every segment against
    its tag (position and last flag included); the whole-object SHA-256 cannot be, since
    the rest is not read. RangeUnavailableError when the object has no segments to seek by
    (a v1 envelope, or a row without ``stored_size``): read it whole instead.
    """
    if ref.stored_size is None:
        raise RangeUnavailableError(ref.label, "range", "the index has no stored size")
    key = _key(ref, keys)

    def read(a: int, b: int) -> bytes:
        return b"".join(store.open_range(ref.cid, a, b))

    try:
        header = read(0, crypto.HEADER_BYTES)
        try:
            crypto.envelope_segments(header, ref.stored_size)
        except InvalidEnvelopeError as e:
            if header[4:5] != bytes([2]):
                raise RangeUnavailableError(ref.label, "range", "not a segmented envelope") from e
            raise
        return crypto.open_range(key, header, ref.stored_size, read, start, end)
    except _STORE_ERRORS as e:
        raise _store_failure(ref, ref.cid, e) from e


class RangeUnavailableError(RetrieveError):
    """The object cannot be read by range (see ``retrieve_range``); not damage."""


def open_object(store: ContentStore, cid: str, key: bytes) -> bytes:
    """A small sealed object (an anchoring manifest), whole: blocks checked against the
    CID, then the envelope opened. Store errors and InvalidEnvelopeError pass through."""
    return crypto.open_sealed(key, store.get(cid))
