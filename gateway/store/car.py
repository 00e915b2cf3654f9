"""CARv1 files: the portable form of a set of IPFS blocks (``ipfs dag import`` / ``export``).

Why: a study's ciphertext must be able to leave the embedded store for a Kubo node, an
archive or another site with its CIDs unchanged. A CARv1 is just

    varint(len(header)) | header | (varint(len(cid) + len(block)) | cid | block)*

where the header is the dag-cbor map ``{"roots": [CID, ...], "version": 1}``. That map is
tiny and fixed, so it is hand-encoded here in dag-cbor's canonical form (keys sorted by
length then bytes, so "roots" before "version"; CIDs as tag 42 over a byte string holding a
0x00 multibase-identity prefix then the binary CID) instead of pulling in a CBOR library.

The reader exists for tests and for checking a CAR before importing it; it understands the
header shape every CARv1 writer produces, not arbitrary dag-cbor.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from gateway.errors import InvalidInputError
from gateway.store.unixfs import BlockData, decode_varint, encode_varint

_CBOR_TAG_CID = 42


def _cbor_head(major: int, value: int) -> bytes:
    """A CBOR item head in its shortest form, as dag-cbor requires."""
    if value < 24:
        return bytes((major << 5 | value,))
    if value < 0x100:
        return bytes((major << 5 | 24, value))
    if value < 0x10000:
        return bytes((major << 5 | 25,)) + value.to_bytes(2, "big")
    if value < 0x100000000:
        return bytes((major << 5 | 26,)) + value.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + value.to_bytes(8, "big")


def encode_car_header(roots: Sequence[bytes]) -> bytes:
    """dag-cbor ``{"roots": [...], "version": 1}`` for binary CIDs ``roots``."""
    parts = [_cbor_head(5, 2), _cbor_head(3, 5), b"roots", _cbor_head(4, len(roots))]
    for cid in roots:
        parts.append(_cbor_head(6, _CBOR_TAG_CID))
        parts.append(_cbor_head(2, len(cid) + 1))
        parts.append(b"\x00")
        parts.append(bytes(cid))
    parts += [_cbor_head(3, 7), b"version", _cbor_head(0, 1)]
    return b"".join(parts)


def write_car(
    out: BinaryIO, roots: Sequence[bytes], blocks: Iterable[tuple[bytes, BlockData]]
) -> int:
    """Write a CARv1 with ``roots`` (binary CIDs) and ``blocks``; return blocks written.

    Blocks are written in the order given; callers pass root-first, depth-first order, which
    is what ``ipfs dag export`` does and lets a reader stream the file.
    """
    header = encode_car_header(roots)
    out.write(encode_varint(len(header)))
    out.write(header)
    count = 0
    for cid, block in blocks:
        out.write(encode_varint(len(cid) + len(block)))
        out.write(cid)
        out.write(block)
        count += 1
    return count


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Car:
    """A parsed CARv1: its declared roots and its blocks, in file order."""

    roots: list[bytes]
    blocks: list[tuple[bytes, bytes]]


def _cbor_read_head(buf: bytes, pos: int) -> tuple[int, int, int]:
    if pos >= len(buf):
        raise ValueError("truncated CBOR")
    initial = buf[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if size is None or pos + size > len(buf):
        raise ValueError("unsupported or truncated CBOR head")
    return major, int.from_bytes(buf[pos : pos + size], "big"), pos + size


def _cbor_decode(buf: bytes, pos: int, depth: int = 0) -> tuple[object, int]:
    """Decode the dag-cbor subset a CAR header uses: uint, bytes, text, array, map, tag 42."""
    if depth > 8:
        raise ValueError("CBOR nested too deeply")
    major, value, pos = _cbor_read_head(buf, pos)
    if major == 0:
        return value, pos
    if major in (2, 3):
        if pos + value > len(buf):
            raise ValueError("truncated CBOR string")
        raw = buf[pos : pos + value]
        return (raw if major == 2 else raw.decode("utf-8")), pos + value
    if major == 4:
        items = []
        for _ in range(value):
            item, pos = _cbor_decode(buf, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        mapping: dict[object, object] = {}
        for _ in range(value):
            key, pos = _cbor_decode(buf, pos, depth + 1)
            item, pos = _cbor_decode(buf, pos, depth + 1)
            if not isinstance(key, str):
                raise ValueError("dag-cbor map keys must be strings")
            mapping[key] = item
        return mapping, pos
    if major == 6 and value == _CBOR_TAG_CID:
        inner, pos = _cbor_decode(buf, pos, depth + 1)
        if not isinstance(inner, bytes) or not inner.startswith(b"\x00"):
            raise ValueError("CID tag must wrap a byte string with a 0x00 prefix")
        return _CidValue(inner[1:]), pos
    raise ValueError(f"unsupported CBOR major type {major}")


@dataclass(frozen=True)
class _CidValue:
    cid: bytes


def decode_car_header(header: bytes) -> list[bytes]:
    """Return the roots of a CARv1 header; ValueError unless it is ``version: 1``."""
    value, pos = _cbor_decode(header, 0)
    if pos != len(header) or not isinstance(value, dict):
        raise ValueError("CAR header is not a single dag-cbor map")
    if value.get("version") != 1:
        raise ValueError(f"unsupported CAR version {value.get('version')!r}")
    roots = value.get("roots")
    if not isinstance(roots, list) or not all(isinstance(r, _CidValue) for r in roots):
        raise ValueError("CAR header roots must be a list of CIDs")
    return [r.cid for r in roots if isinstance(r, _CidValue)]


def _cid_length(buf: bytes, pos: int) -> int:
    """Length of the binary CID starting at ``pos`` (CIDv0 or CIDv1)."""
    if buf[pos : pos + 2] == b"\x12\x20":
        return 34  # CIDv0: a bare sha2-256 multihash
    p = pos
    for _ in range(3):  # version, codec, multihash code
        _, p = decode_varint(buf, p)
    length, p = decode_varint(buf, p)
    return p + length - pos


def iter_car(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield (cid, block) for each section after the header of the CAR in ``data``."""
    header_len, pos = decode_varint(data, 0)
    pos += header_len
    end = len(data)
    while pos < end:
        section_len, pos = decode_varint(data, pos)
        if section_len == 0 or pos + section_len > end:
            raise ValueError(f"truncated or empty CAR section at offset {pos}")
        cid_len = _cid_length(data, pos)
        if cid_len > section_len:
            raise ValueError(f"CAR section at offset {pos} is shorter than its CID")
        yield data[pos : pos + cid_len], data[pos + cid_len : pos + section_len]
        pos += section_len


def read_car(source: bytes | BinaryIO) -> Car:
    """Parse a whole CARv1 (bytes or a binary file); InvalidInputError if malformed."""
    data = source if isinstance(source, bytes) else source.read()
    try:
        header_len, pos = decode_varint(data, 0)
        if header_len == 0 or pos + header_len > len(data):
            raise ValueError("truncated CAR header")
        roots = decode_car_header(data[pos : pos + header_len])
        blocks = list(iter_car(data))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"not a valid CARv1 file: {e}") from e
    return Car(roots, blocks)


def car_bytes(roots: Sequence[bytes], blocks: Iterable[tuple[bytes, BlockData]]) -> bytes:
    """A whole CARv1 in memory (convenience for tests and small exports)."""
    buf = io.BytesIO()
    write_car(buf, roots, blocks)
    return buf.getvalue()
