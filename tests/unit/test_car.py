"""CARv1 export/import: header bytes, every block present and matching its CID, round trips."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from gateway.errors import IntegrityError, InvalidInputError, NotFoundError
from gateway.store import PackBlockStore
from gateway.store.car import car_bytes, decode_car_header, encode_car_header, read_car
from gateway.store.unixfs import (
    CHUNK_SIZE,
    build_dag,
    cid_from_str,
    cid_to_str,
    decode_cid,
    encode_varint,
)


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_header_is_canonical_dag_cbor() -> None:
    cid = cid_from_str("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    header = encode_car_header([cid])
    expected = (
        b"\xa2"  # map(2)
        + b"\x65roots"  # "roots" sorts before "version": shorter key first
        + b"\x81"  # array(1)
        + b"\xd8\x2a"  # tag(42)
        + b"\x58\x25"  # bytes(37)
        + b"\x00"  # multibase identity prefix
        + cid
        + b"\x67version"
        + b"\x01"
    )
    assert header == expected
    assert decode_car_header(header) == [cid]
    assert decode_car_header(encode_car_header([])) == []


def test_export_then_parse_back(tmp_path: Path) -> None:
    objects = [_data(3 * CHUNK_SIZE + 11, 1), b"", b"tiny", _data(CHUNK_SIZE, 2)]
    with PackBlockStore(tmp_path / "s") as store:
        roots = [store.put(o) for o in objects]
        out = io.BytesIO()
        written = store.export_car(roots, out)
    car = read_car(out.getvalue())
    assert [cid_to_str(r) for r in car.roots] == roots
    expected = {cid for o in objects for cid, _ in build_dag(o).blocks}
    assert {cid for cid, _ in car.blocks} == expected
    assert written == len(car.blocks) == len(expected)  # each block once
    for cid, block in car.blocks:
        assert hashlib.sha256(block).digest() == decode_cid(cid).digest
    # Root first, then its children depth first (as `ipfs dag export` orders them).
    dag = build_dag(objects[0])
    assert car.blocks[0][0] == dag.root
    assert [c for c, _ in car.blocks[1:4]] == [c for c, _ in dag.blocks[:3]]


def test_export_shared_blocks_once(tmp_path: Path) -> None:
    a = bytes(2 * CHUNK_SIZE)  # two identical leaves
    b = bytes(CHUNK_SIZE)  # that same leaf alone
    with PackBlockStore(tmp_path / "s") as store:
        roots = [store.put(a), store.put(b)]
        out = io.BytesIO()
        assert store.export_car(roots, out) == 2
    car = read_car(out.getvalue())
    assert len(car.blocks) == 2


def test_export_missing_root(tmp_path: Path) -> None:
    with PackBlockStore(tmp_path / "s") as store, pytest.raises(NotFoundError):
        store.export_car([build_dag(b"absent").root_str], io.BytesIO())


def test_import_round_trip(tmp_path: Path) -> None:
    data = _data(2 * CHUNK_SIZE + 5, 3)
    with PackBlockStore(tmp_path / "a") as src:
        cid = src.put(data)
        out = io.BytesIO()
        src.export_car([cid], out)
    with PackBlockStore(tmp_path / "b") as dst:
        assert dst.import_car(io.BytesIO(out.getvalue())) == [cid]
        assert dst.get(cid) == data
        assert list(dst.verify()) == []


def test_import_refuses_a_tampered_block(tmp_path: Path) -> None:
    dag = build_dag(b"payload")
    raw = bytearray(car_bytes([dag.root], dag.blocks))
    raw[-1] ^= 1
    with PackBlockStore(tmp_path / "s") as store:
        with pytest.raises(IntegrityError, match="does not match"):
            store.import_car(io.BytesIO(bytes(raw)))
        assert not store.has(dag.root_str)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x05\xa0",  # header longer than the file
        encode_varint(3) + b"\xa0\x00\x00",  # trailing bytes after the map
        (lambda h: encode_varint(len(h)) + h)(encode_car_header([]).replace(b"\x01", b"\x02")),
        (lambda h: encode_varint(len(h)) + h + b"\x30\x01")(encode_car_header([])),
    ],
    ids=["empty", "short-header", "trailing", "version-2", "truncated-section"],
)
def test_read_car_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(InvalidInputError):
        read_car(bad)
