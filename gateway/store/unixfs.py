"""UnixFS file DAGs built byte-for-byte as ``ipfs add --cid-version=1`` builds them.

Why hand-rolled: the embedded store must hand out the very CIDs a Kubo node would give for
the same bytes, so an object can move between the embedded store and Kubo (or a CAR file)
and keep its address. The recipe is small and fixed, so it is written out here with no I/O:

* fixed 262144-byte chunks;
* each chunk is a *raw leaf*: the chunk itself is the block, CIDv1, codec ``raw`` (0x55),
  multihash sha2-256;
* leaves are grouped, in order, 174 to a parent; parents are grouped the same way, level by
  level, until one node remains (Kubo's and js-ipfs-unixfs-importer's "balanced" layout);
* every parent is a dag-pb (0x70) node: its Links (empty Name, Tsize = serialized size of the
  whole subtree) are serialized *before* its Data, a UnixFS ``Data`` message with
  Type=File, filesize and one blocksize (file bytes under the link) per link;
* a file of one chunk is that raw leaf alone, and so is the empty file (one empty raw leaf),
  as both Kubo and js ``reduceSingleLeafToSelf`` do.

Performance: chunks are ``memoryview`` slices of the caller's bytes (no copy), hashing is
hashlib's C code (it releases the GIL, so puts on several threads hash in parallel), and the
Python work is per block, never per byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.errors import InvalidInputError

CHUNK_SIZE = 262_144
"""Bytes per leaf: Kubo's default ``size-262144`` chunker."""

MAX_LINKS = 174
"""Most links one dag-pb node of a file may hold (Kubo's balanced layout)."""

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
MH_SHA2_256 = 0x12
SHA2_256_LEN = 32

_RAW_PREFIX = bytes([0x01, CODEC_RAW, MH_SHA2_256, SHA2_256_LEN])
_DAG_PB_PREFIX = bytes([0x01, CODEC_DAG_PB, MH_SHA2_256, SHA2_256_LEN])

UNIXFS_RAW = 0
UNIXFS_FILE = 2

BlockData = bytes | memoryview
"""A block's bytes; leaves are zero-copy views into the caller's object."""


# --------------------------------------------------------------------------- varints


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128, as protobuf, multiformats and CAR all use it."""
    if value < 0:
        raise ValueError("varint must not be negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: BlockData, pos: int) -> tuple[int, int]:
    """Read an unsigned LEB128 at ``pos``; return (value, position after it).

    Raises ValueError on a truncated or over-long (more than 9 bytes, > 2**63) varint, and on
    a non-minimal encoding, which multiformats forbids so one value has one encoding.
    """
    value = 0
    shift = 0
    start = pos
    end = len(buf)
    while True:
        if pos >= end:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise ValueError("non-minimal varint")
            return value, pos
        shift += 7
        if shift >= 63:
            raise ValueError("varint too long")


# --------------------------------------------------------------------------- CIDs


@dataclass(frozen=True)
class CidParts:
    """A decoded CIDv1: version, content codec, multihash function and digest."""

    version: int
    codec: int
    hash_code: int
    digest: bytes


def cid_v1(codec: int, digest: bytes) -> bytes:
    """Binary CIDv1 for a sha2-256 ``digest`` of a block in ``codec``."""
    if codec == CODEC_RAW:
        return _RAW_PREFIX + digest
    if codec == CODEC_DAG_PB:
        return _DAG_PB_PREFIX + digest
    return b"\x01" + encode_varint(codec) + bytes([MH_SHA2_256, SHA2_256_LEN]) + digest


def raw_cid(block: BlockData) -> bytes:
    """CID of ``block`` stored as a raw leaf."""
    return _RAW_PREFIX + hashlib.sha256(block).digest()


def dag_pb_cid(block: BlockData) -> bytes:
    """CID of ``block`` as a dag-pb node."""
    return _DAG_PB_PREFIX + hashlib.sha256(block).digest()


def decode_cid(cid: bytes) -> CidParts:
    """Split a binary CIDv1 into its parts; ValueError if it is not one this store can check.

    Only CIDv1 with a sha2-256 multihash is accepted: that is all ``ipfs add
    --cid-version=1`` produces, and a CID whose hash we cannot recompute could not be verified.
    """
    try:
        version, pos = decode_varint(cid, 0)
        codec, pos = decode_varint(cid, pos)
        hash_code, pos = decode_varint(cid, pos)
        length, pos = decode_varint(cid, pos)
    except ValueError as e:
        raise ValueError(f"malformed CID: {e}") from e
    if version != 1:
        raise ValueError(f"unsupported CID version {version} (only CIDv1)")
    if hash_code != MH_SHA2_256 or length != SHA2_256_LEN:
        raise ValueError(f"unsupported multihash 0x{hash_code:x}/{length} (only sha2-256)")
    digest = cid[pos:]
    if len(digest) != length:
        raise ValueError("CID digest length does not match its multihash header")
    return CidParts(version, codec, hash_code, bytes(digest))


def cid_to_str(cid: bytes) -> str:
    """Multibase base32 (``b`` + lowercase RFC 4648, no padding): the CIDv1 text form."""
    return "b" + base64.b32encode(cid).decode("ascii").lower().rstrip("=")


def cid_from_str(text: str) -> bytes:
    """Parse a base32 CIDv1 string (as ``cid_to_str`` writes it) into binary form.

    Raises InvalidInputError for anything else: other multibases, CIDv0, bad characters, or a
    CID whose hash this store cannot check. CIDs arrive from URLs and the index, so a clear
    refusal beats a confusing "not found".
    """
    if len(text) < 2 or text[0] not in "bB":
        raise InvalidInputError(f"not a base32 CIDv1 (expected a 'b…' string): {text[:80]!r}")
    body = text[1:].upper()
    body += "=" * (-len(body) % 8)
    try:
        cid = base64.b32decode(body)
        decode_cid(cid)
    except (binascii.Error, ValueError) as e:
        raise InvalidInputError(f"invalid CID {text[:80]!r}: {e}") from e
    return cid


def block_matches(cid: bytes, block: BlockData) -> bool:
    """Whether ``block`` hashes to the digest in ``cid`` (sha2-256 CIDv1 only)."""
    if len(cid) == 36 and cid[2] == MH_SHA2_256 and cid[3] == SHA2_256_LEN:
        # Fast path for the 1-byte-codec CIDs we write (raw, dag-pb).
        return hashlib.sha256(block).digest() == cid[4:]
    try:
        parts = decode_cid(cid)
    except ValueError:
        return False
    return hashlib.sha256(block).digest() == parts.digest


# --------------------------------------------------------------------------- protobuf


def _field_bytes(tag: int, payload: BlockData) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + bytes(payload)


def encode_unixfs_file(filesize: int, blocksizes: Sequence[int]) -> bytes:
    """UnixFS ``Data`` for a file parent: Type=File(2), filesize, blocksizes (not packed).

    Field order and encoding follow go-unixfs and js ipfs-unixfs: 1 Type, 3 filesize, then
    one unpacked field 4 per blocksize; no Data field (the bytes live in the children).
    """
    parts = [b"\x08\x02\x18", encode_varint(filesize)]
    for size in blocksizes:
        parts.append(b"\x20")
        parts.append(encode_varint(size))
    return b"".join(parts)


@dataclass(frozen=True)
class PBLink:
    """One dag-pb link: child CID (binary), optional name, optional cumulative size."""

    cid: bytes
    name: str | None = None
    tsize: int | None = None


@dataclass(frozen=True)
class PBNode:
    """A decoded dag-pb node."""

    links: tuple[PBLink, ...]
    data: bytes | None


def encode_dag_pb(links: Sequence[PBLink], data: bytes | None) -> bytes:
    """Serialize a dag-pb PBNode: every Link (field 2) first, then Data (field 1).

    That order is the dag-pb spec's canonical form (and what Kubo and @ipld/dag-pb write), so
    the same logical node always hashes to the same CID. Within a link: Hash(1), Name(2),
    Tsize(3); an empty Name is still written, as both reference encoders do.
    """
    parts: list[bytes] = []
    for link in links:
        body = [_field_bytes(0x0A, link.cid)]
        if link.name is not None:
            body.append(_field_bytes(0x12, link.name.encode("utf-8")))
        if link.tsize is not None:
            body.append(b"\x18" + encode_varint(link.tsize))
        encoded = b"".join(body)
        parts.append(b"\x12" + encode_varint(len(encoded)) + encoded)
    if data is not None:
        parts.append(_field_bytes(0x0A, data))
    return b"".join(parts)


def _iter_fields(buf: BlockData, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value-or-start, end) for each protobuf field.

    For varints the third item is the value and the fourth the position after it; for
    length-delimited fields they are the payload bounds. Other wire types raise ValueError:
    neither dag-pb nor UnixFS uses them.
    """
    pos = start
    while pos < end:
        key, pos = decode_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = decode_varint(buf, pos)
            yield field, wire, value, pos
        elif wire == 2:
            length, pos = decode_varint(buf, pos)
            if pos + length > end:
                raise ValueError("protobuf field runs past the end of the message")
            yield field, wire, pos, pos + length
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if pos != end:
        raise ValueError("protobuf message overruns its bounds")


def decode_dag_pb(block: BlockData) -> PBNode:
    """Parse a dag-pb block strictly (per the dag-pb spec); ValueError if malformed.

    Used to walk a DAG on read and CAR export. Strict because a block that parses loosely
    could be read two ways; unknown fields and a Data field before Links are rejected.
    """
    links: list[PBLink] = []
    data: bytes | None = None
    for field, wire, a, b in _iter_fields(block, 0, len(block)):
        if field == 2 and wire == 2:
            if data is not None:
                raise ValueError("dag-pb: Links must come before Data")
            links.append(_decode_link(block, a, b))
        elif field == 1 and wire == 2:
            if data is not None:
                raise ValueError("dag-pb: duplicate Data")
            data = bytes(block[a:b])
        else:
            raise ValueError(f"dag-pb: unexpected field {field} (wire type {wire})")
    return PBNode(tuple(links), data)


def _decode_link(block: BlockData, start: int, end: int) -> PBLink:
    cid: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for field, wire, a, b in _iter_fields(block, start, end):
        if field <= last:
            raise ValueError("dag-pb: link fields out of order or repeated")
        last = field
        if field == 1 and wire == 2:
            cid = bytes(block[a:b])
        elif field == 2 and wire == 2:
            name = bytes(block[a:b]).decode("utf-8")
        elif field == 3 and wire == 0:
            tsize = a
        else:
            raise ValueError(f"dag-pb link: unexpected field {field} (wire type {wire})")
    if cid is None:
        raise ValueError("dag-pb link without Hash")
    return PBLink(cid, name, tsize)


@dataclass(frozen=True)
class UnixFSData:
    """The parts of a UnixFS ``Data`` message a file reader needs."""

    type: int
    data: bytes
    filesize: int | None
    blocksizes: tuple[int, ...]


def decode_unixfs(buf: bytes) -> UnixFSData:
    """Parse a UnixFS ``Data`` message; fields a file reader does not need are skipped."""
    type_: int | None = None
    data = b""
    filesize: int | None = None
    blocksizes: list[int] = []
    for field, wire, a, b in _iter_fields(buf, 0, len(buf)):
        if field == 1 and wire == 0:
            type_ = a
        elif field == 2 and wire == 2:
            data = buf[a:b]
        elif field == 3 and wire == 0:
            filesize = a
        elif field == 4 and wire == 0:
            blocksizes.append(a)
        elif field == 4 and wire == 2:  # tolerate packed encoding from other writers
            pos = a
            while pos < b:
                value, pos = decode_varint(buf, pos)
                blocksizes.append(value)
    if type_ is None:
        raise ValueError("UnixFS Data without Type")
    return UnixFSData(type_, data, filesize, tuple(blocksizes))


# --------------------------------------------------------------------------- DAG builder


@dataclass(frozen=True)
class Dag:
    """A built file DAG: the root CID and every block, children before parents.

    ``blocks`` holds (binary CID, block bytes); the root is the last entry. Leaves are
    memoryviews into the input, so the input must not be mutated while they are in use.
    """

    root: bytes
    blocks: list[tuple[bytes, BlockData]]
    size: int

    @property
    def root_str(self) -> str:
        """The root CID as ``ipfs add --cid-version=1`` prints it."""
        return cid_to_str(self.root)


def build_dag(
    data: bytes | bytearray | memoryview,
    *,
    chunk_size: int = CHUNK_SIZE,
    max_links: int = MAX_LINKS,
) -> Dag:
    """Chunk, hash and link ``data`` into the UnixFS DAG Kubo would build (see module doc).

    ``chunk_size`` and ``max_links`` exist only so tests can grow deep trees from small
    inputs (and check them against the js importer given the same options); the store always
    uses the defaults, which are what make its CIDs Kubo's.
    """
    if chunk_size < 1 or max_links < 2:
        raise ValueError("chunk_size must be >= 1 and max_links >= 2")
    view = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
    n = len(view)
    sha = hashlib.sha256
    if n <= chunk_size:
        # One chunk (or none): the raw leaf is the whole file.
        cid = _RAW_PREFIX + sha(view).digest()
        return Dag(cid, [(cid, view)], n)

    blocks: list[tuple[bytes, BlockData]] = []
    # Per node at the current level: (cid, file bytes under it, serialized subtree size).
    level: list[tuple[bytes, int, int]] = []
    for off in range(0, n, chunk_size):
        chunk = view[off : off + chunk_size]
        cid = _RAW_PREFIX + sha(chunk).digest()
        blocks.append((cid, chunk))
        size = len(chunk)
        level.append((cid, size, size))

    while len(level) > 1:
        parents: list[tuple[bytes, int, int]] = []
        for i in range(0, len(level), max_links):
            group = level[i : i + max_links]
            node = _file_node(group)
            cid = _DAG_PB_PREFIX + sha(node).digest()
            blocks.append((cid, node))
            parents.append((cid, sum(g[1] for g in group), len(node) + sum(g[2] for g in group)))
        level = parents
    return Dag(level[0][0], blocks, n)


def _file_node(children: Sequence[tuple[bytes, int, int]]) -> bytes:
    """Serialize one dag-pb file parent over ``children`` (cid, filesize, tsize).

    Written out directly rather than through ``encode_dag_pb`` because it is the hot path;
    ``tests/unit/test_unixfs.py`` checks both produce the same bytes.
    """
    varint = encode_varint
    parts: list[bytes] = []
    for cid, _filesize, tsize in children:
        # Link: 0a <len> cid, 12 00 (empty Name), 18 <tsize>
        body_len = 1 + len(varint(len(cid))) + len(cid) + 2 + 1 + len(varint(tsize))
        parts.append(
            b"\x12"
            + varint(body_len)
            + b"\x0a"
            + varint(len(cid))
            + cid
            + b"\x12\x00\x18"
            + varint(tsize)
        )
    unixfs = encode_unixfs_file(sum(c[1] for c in children), [c[1] for c in children])
    parts.append(b"\x0a" + varint(len(unixfs)) + unixfs)
    return b"".join(parts)


def file_cid(data: bytes) -> str:
    """The CID string ``ipfs add --cid-version=1`` would print for ``data``."""
    return build_dag(data).root_str
