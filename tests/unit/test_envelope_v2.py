"""Envelope v2 (segmented AES-256-GCM, STREAM nonces) read as a stream of arbitrary chunks.

Small segments (64 bytes) so that one short plaintext spans many segments and every tamper
case below lands in the middle of a stream, not at its only segment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from gateway import crypto
from gateway.errors import InvalidEnvelopeError

KEY = bytes(range(32))
KEY_ID = bytes(range(16))
SEG = 64
STEP = SEG + crypto.TAG_BYTES
H = crypto.HEADER_BYTES
PLAIN = bytes(i % 251 for i in range(1000))  # 15 full segments + a final one of 40 bytes


def seal(plain: bytes = PLAIN, key: bytes = KEY) -> bytes:
    return bytes(crypto.seal_parts(key, KEY_ID, [plain], segment_size=SEG))


ENV = seal()
OTHER = seal()  # same key, same plaintext, another object (another nonce prefix)


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for pos in range(0, len(data), size):
        yield data[pos : pos + size]


def opened(envelope: bytes, size: int = 100, key: bytes = KEY) -> bytes:
    return b"".join(crypto.open_stream(key, chunks(envelope, size)))


def segment(envelope: bytes, index: int) -> bytes:
    return envelope[H + index * STEP : H + (index + 1) * STEP]


def flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("size", [1, 7, SEG, STEP, STEP + 1, 300, len(ENV)])
def test_round_trip_any_chunking(size: int) -> None:
    assert opened(ENV, size) == PLAIN


@pytest.mark.parametrize("length", [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 3 * SEG + 5])
def test_round_trip_lengths(length: int) -> None:
    plain = PLAIN[:length]
    env = seal(plain)
    assert len(env) == H + len(plain) + crypto.TAG_BYTES * max(1, -(-length // SEG))
    assert opened(env, 13) == plain
    assert crypto.open_sealed(KEY, env) == plain


def test_parts_equal_their_concatenation() -> None:
    parts: list[bytes | bytearray | memoryview] = [
        b"x" * 10,
        memoryview(PLAIN)[:100],
        bytearray(),
        PLAIN[100:],
    ]
    env = crypto.seal_parts(KEY, KEY_ID, parts, segment_size=SEG)
    assert opened(bytes(env)) == b"x" * 10 + PLAIN


def test_default_segment_and_header() -> None:
    env = crypto.seal(KEY, KEY_ID, PLAIN * 200)
    assert env[:4] == b"ZTBE" and env[4] == 2 and env[5] == 1
    assert crypto.envelope_key_id(env) == KEY_ID
    assert int.from_bytes(env[H - 4 : H], "big") == crypto.SEGMENT_BYTES
    assert crypto.open_sealed(KEY, env) == PLAIN * 200


def _swap(env: bytes, i: int, j: int) -> bytes:
    segs = [segment(env, k) for k in range(16)]
    segs[i], segs[j] = segs[j], segs[i]
    return env[:H] + b"".join(segs)


TAMPERED: list[tuple[str, bytes, bytes]] = [
    ("magic changed", KEY, flip(ENV, 0)),
    ("version changed", KEY, flip(ENV, 4)),
    ("version 3", KEY, ENV[:4] + b"\x03" + ENV[5:]),
    ("algorithm changed", KEY, flip(ENV, 5)),
    ("key id changed", KEY, flip(ENV, 8)),
    ("nonce prefix changed", KEY, flip(ENV, H - 5)),
    ("segment size changed", KEY, flip(ENV, H - 1)),
    ("segment size zero", KEY, ENV[: H - 4] + bytes(4) + ENV[H:]),
    ("segment size huge", KEY, ENV[: H - 4] + b"\xff\xff\xff\xff" + ENV[H:]),
    ("first segment ciphertext", KEY, flip(ENV, H + 3)),
    ("middle segment ciphertext", KEY, flip(ENV, H + 7 * STEP + 10)),
    ("middle segment tag", KEY, flip(ENV, H + 8 * STEP - 1)),
    ("final segment tag", KEY, flip(ENV, len(ENV) - 1)),
    ("truncated by one byte", KEY, ENV[:-1]),
    ("truncated at a segment boundary", KEY, ENV[: H + 15 * STEP]),
    ("truncated to one segment", KEY, ENV[: H + STEP]),
    ("header only", KEY, ENV[:H]),
    ("header and a short tail", KEY, ENV[: H + 10]),
    ("too short", KEY, ENV[:10]),
    ("empty", KEY, b""),
    ("one byte appended", KEY, ENV + b"\0"),
    ("a segment appended", KEY, ENV + segment(ENV, 3)),
    ("another envelope appended", KEY, ENV + OTHER),
    ("two segments swapped", KEY, _swap(ENV, 1, 2)),
    ("last two segments swapped", KEY, _swap(ENV, 14, 15)),
    ("a segment dropped", KEY, ENV[: H + 4 * STEP] + ENV[H + 5 * STEP :]),
    ("a segment duplicated", KEY, ENV[: H + 5 * STEP] + ENV[H + 4 * STEP :]),
    (
        "a segment from another object, same key and position",
        KEY,
        ENV[: H + 6 * STEP] + segment(OTHER, 6) + ENV[H + 7 * STEP :],
    ),
    ("another object's header on this body", KEY, OTHER[:H] + ENV[H:]),
    ("wrong key", bytes(32), ENV),
    ("short key", KEY[:16], ENV),
]


@pytest.mark.parametrize(("case", "key", "envelope"), TAMPERED, ids=[t[0] for t in TAMPERED])
@pytest.mark.parametrize("size", [1, 50, 1 << 20])
def test_tampering_is_one_opaque_error(case: str, key: bytes, envelope: bytes, size: int) -> None:
    with pytest.raises(InvalidEnvelopeError) as info:
        opened(envelope, size, key)
    assert str(info.value) == "ciphertext failed authentication", case
    with pytest.raises(InvalidEnvelopeError):
        crypto.open_sealed(key, envelope)


@pytest.mark.parametrize(
    ("damage", "good_segments"),
    [
        (lambda e: flip(e, H + 9 * STEP + 5), 9),  # ciphertext of segment 9
        (lambda e: e[: H + 12 * STEP], 11),  # cut at a boundary: 12 is not the final one
        (lambda e: e + b"\0", 15),  # appended: the last real segment is not final any more
    ],
)
def test_verified_before_release(damage: Callable[[bytes], bytes], good_segments: int) -> None:
    """Exactly the segments before the damaged one are handed out, each authentic."""
    got: list[bytes] = []
    with pytest.raises(InvalidEnvelopeError):
        for plain in crypto.open_stream(KEY, chunks(damage(ENV), 37)):
            got.append(plain)
    assert len(got) == good_segments
    assert b"".join(got) == PLAIN[: good_segments * SEG]


def test_v1_objects_stay_readable() -> None:
    v1 = crypto.seal_v1(KEY, KEY_ID, PLAIN * 100)
    assert v1[4] == 1 and crypto.envelope_key_id(v1) == KEY_ID
    assert opened(v1, 333) == PLAIN * 100
    assert crypto.open_sealed(KEY, v1) == PLAIN * 100
    for bad in (flip(v1, 30), flip(v1, len(v1) - 1), v1[:-1], v1 + b"\0"):
        with pytest.raises(InvalidEnvelopeError):
            opened(bad)


def test_memory_is_bounded_by_a_segment() -> None:
    """The opener never holds more than a segment plus one input chunk."""
    big = crypto.seal(KEY, KEY_ID, bytes(4 << 20))
    sizes = [len(p) for p in crypto.open_stream(KEY, chunks(big, 256 << 10))]
    assert max(sizes) == crypto.SEGMENT_BYTES and sum(sizes) == 4 << 20
