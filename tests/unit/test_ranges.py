"""Ranged reads for WADO-RS frames: ``ContentStore.open_range`` reads only the blocks a range
spans (each still checked against its CID), ``crypto.open_range`` decrypts only the segments
it spans (each tag checked under the nonce of its position, the last flag included)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from gateway import crypto
from gateway.errors import InvalidEnvelopeError
from gateway.store import PackBlockStore


def _envelope(plain: bytes, segment: int) -> tuple[bytes, bytes]:
    key = crypto.new_data_key()
    return key, bytes(crypto.seal_parts(key, crypto.new_key_id(), [plain], segment))


def _range(key: bytes, env: bytes, start: int, end: int) -> bytes:
    return crypto.open_range(
        key, env[: crypto.HEADER_BYTES], len(env), lambda a, b: env[a:b], start, end
    )


@pytest.mark.parametrize("size", [1, 63, 64, 65, 640, 1000])
def test_every_range_is_the_plaintext_slice(size: int) -> None:
    plain = os.urandom(size)
    key, env = _envelope(plain, 64)
    rng = random.Random(size)
    spans = [(0, size), (size - 1, size), (0, 1)] + [
        tuple(sorted((rng.randrange(size + 1), rng.randrange(size + 1)))) for _ in range(40)
    ]
    for start, end in spans:
        assert _range(key, env, start, end) == plain[start:end], (start, end)


def test_a_range_reads_only_its_segments_and_checks_them() -> None:
    plain = os.urandom(64 * 10)
    key, env = _envelope(plain, 64)
    step = 64 + crypto.TAG_BYTES
    seen: list[tuple[int, int]] = []

    def read(a: int, b: int) -> bytes:
        seen.append((a, b))
        return env[a:b]

    header = env[: crypto.HEADER_BYTES]
    assert crypto.open_range(key, header, len(env), read, 130, 200) == plain[130:200]
    assert seen == [(crypto.HEADER_BYTES + 2 * step, crypto.HEADER_BYTES + 4 * step)]
    damaged = bytearray(env)
    damaged[crypto.HEADER_BYTES + 8 * step + 3] ^= 1  # outside the range: not read
    assert _range(key, bytes(damaged), 130, 200) == plain[130:200]
    with pytest.raises(InvalidEnvelopeError):
        _range(key, bytes(damaged), 8 * 64, 8 * 64 + 1)
    # A shorter envelope size makes a middle segment the "last": its tag fails.
    with pytest.raises(InvalidEnvelopeError):
        crypto.open_range(key, header, len(env) - step, lambda a, b: env[a:b], 64 * 8, 64 * 9)
    with pytest.raises(InvalidEnvelopeError):
        _range(crypto.new_data_key(), env, 0, 10)


def test_v1_envelopes_have_no_ranges() -> None:
    key = crypto.new_data_key()
    env = crypto.seal_v1(key, crypto.new_key_id(), b"x" * 100)
    with pytest.raises(InvalidEnvelopeError):
        _range(key, env, 0, 10)


def test_store_ranges_read_the_right_bytes(tmp_path: Path) -> None:
    store = PackBlockStore(tmp_path / "store")
    try:
        data = os.urandom(3 * 262144 + 12345)  # four leaves
        cid = store.put(data)
        rng = random.Random(7)
        spans = [(0, len(data)), (262143, 262145), (len(data) - 5, len(data) + 100), (5, 5)]
        spans += [
            tuple(sorted((rng.randrange(len(data)), rng.randrange(len(data))))) for _ in range(30)
        ]
        for start, end in spans:
            assert b"".join(store.open_range(cid, start, end)) == data[start:end], (start, end)
    finally:
        store.close()
