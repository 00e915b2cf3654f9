"""The instance envelope and key wraps: any tampering or wrong key is one opaque error."""

from __future__ import annotations

import pytest

from gateway import crypto
from gateway.errors import InvalidEnvelopeError

KEY = bytes(range(32))
KEY_ID = bytes(16)


def test_round_trip() -> None:
    env = crypto.seal(KEY, KEY_ID, b"pixel data")
    assert crypto.open_sealed(KEY, env) == b"pixel data"
    assert crypto.envelope_key_id(env) == KEY_ID


def test_nonce_is_fresh() -> None:
    assert crypto.seal(KEY, KEY_ID, b"x") != crypto.seal(KEY, KEY_ID, b"x")


def test_plaintext_not_in_ciphertext() -> None:
    secret = b"PATIENT^NAME" * 10
    assert secret not in crypto.seal(KEY, KEY_ID, secret)


def _flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


ENV = crypto.seal(KEY, KEY_ID, b"some instance bytes" * 100)


@pytest.mark.parametrize(
    ("case", "key", "envelope"),
    [
        ("magic changed", KEY, _flip(ENV, 0)),
        ("version changed", KEY, _flip(ENV, 4)),
        ("algorithm changed", KEY, _flip(ENV, 5)),
        ("key id changed", KEY, _flip(ENV, 8)),
        ("nonce changed", KEY, _flip(ENV, crypto.HEADER_BYTES - 1)),
        ("ciphertext changed", KEY, _flip(ENV, crypto.HEADER_BYTES + 5)),
        ("tag changed", KEY, _flip(ENV, len(ENV) - 1)),
        ("truncated", KEY, ENV[:-1]),
        ("too short", KEY, ENV[:10]),
        ("empty", KEY, b""),
        ("extended", KEY, ENV + b"\0"),
        ("wrong key", bytes(32), ENV),
        ("short key", KEY[:16], ENV),
    ],
)
def test_tampering_is_one_opaque_error(case: str, key: bytes, envelope: bytes) -> None:
    with pytest.raises(InvalidEnvelopeError) as info:
        crypto.open_sealed(key, envelope)
    assert str(info.value) == "ciphertext failed authentication", case


@pytest.mark.parametrize("kem", ["x25519", "mlkem768-x25519"])
def test_wrap_round_trip_and_binding(kem: crypto.KemName) -> None:
    pair = crypto.generate_keypair(kem)
    wrapped = crypto.wrap(pair.public, kem, KEY, b"purpose-a")
    assert crypto.unwrap(pair, wrapped, b"purpose-a") == KEY
    with pytest.raises(InvalidEnvelopeError):
        crypto.unwrap(pair, wrapped, b"purpose-b")
    with pytest.raises(InvalidEnvelopeError):
        crypto.unwrap(crypto.generate_keypair(kem), wrapped, b"purpose-a")
    with pytest.raises(InvalidEnvelopeError):
        crypto.unwrap(pair, _flip(wrapped, len(wrapped) - 3), b"purpose-a")


def test_wrap_for_other_kem_refused() -> None:
    x = crypto.generate_keypair("x25519")
    wrapped = crypto.wrap(x.public, "x25519", KEY, b"i")
    hybrid = crypto.generate_keypair("mlkem768-x25519")
    with pytest.raises(InvalidEnvelopeError):
        crypto.unwrap(hybrid, wrapped, b"i")


def test_protected_keypair() -> None:
    pair = crypto.generate_keypair("x25519")
    doc = crypto.protect_keypair(pair, "correct horse", "custodian")
    assert pair.private.hex() not in doc
    assert crypto.unlock_keypair(doc, "correct horse") == pair
    with pytest.raises(InvalidEnvelopeError):
        crypto.unlock_keypair(doc, "wrong")
    assert crypto.read_public(doc) == ("x25519", pair.public)
