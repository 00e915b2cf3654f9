"""All cryptography in one place: the only module that imports ``cryptography.hazmat``.

* The instance envelope: AES-256-GCM with a fresh 96-bit nonce; the header (magic, format
  version, algorithm, key id) is authenticated as associated data, so a changed header fails
  exactly like a changed ciphertext. Any failure raises one opaque ``InvalidEnvelopeError``.
* Key wraps: HPKE (RFC 9180) base mode, X25519 or the ML-KEM-768 + X25519 hybrid, HKDF-SHA256,
  AES-256-GCM. A wrap is tagged with its KEM so either kind of key can be opened later.
* Private keys at rest: encrypted under a key derived from a passphrase with argon2id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import ConfigError, CryptoError, InvalidEnvelopeError

KemName = Literal["x25519", "mlkem768-x25519"]

KEY_BYTES = 32
KEY_ID_BYTES = 16
NONCE_BYTES = 12
_MAGIC = b"ZTBE"
_VERSION = 1
_ALG_AES256GCM = 1
HEADER_BYTES = len(_MAGIC) + 2 + KEY_ID_BYTES + NONCE_BYTES
ENVELOPE_OVERHEAD = HEADER_BYTES + 16

_KEM_IDS: dict[str, int] = {"x25519": 1, "mlkem768-x25519": 2}
_KEM_BY_ID = {v: k for k, v in _KEM_IDS.items()}
_SUITES = {
    "x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    "mlkem768-x25519": hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}
_X25519_LEN = 32
_MLKEM_SEED_LEN = 64


def new_data_key() -> bytes:
    """A fresh random 256-bit symmetric key."""
    return secrets.token_bytes(KEY_BYTES)


def new_key_id() -> bytes:
    """A fresh random key identifier (not secret; goes in every envelope header)."""
    return secrets.token_bytes(KEY_ID_BYTES)


def seal(key: bytes, key_id: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``key``; the result carries everything but the key."""
    if len(key) != KEY_BYTES or len(key_id) != KEY_ID_BYTES:
        raise CryptoError("envelope key must be 32 bytes and key id 16 bytes")
    nonce = os.urandom(NONCE_BYTES)
    header = _MAGIC + bytes((_VERSION, _ALG_AES256GCM)) + key_id + nonce
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def seal_parts(key: bytes, key_id: bytes, parts: list[bytes | memoryview]) -> bytearray:
    """``seal`` of the concatenation of ``parts``, without building the concatenation.

    Ingest seals file meta + a data set of up to gigabytes; streaming GCM into one
    preallocated buffer, returned as is, means the ciphertext is the only copy made. The
    output is identical in format to ``seal``.
    """
    if len(key) != KEY_BYTES or len(key_id) != KEY_ID_BYTES:
        raise CryptoError("envelope key must be 32 bytes and key id 16 bytes")
    nonce = os.urandom(NONCE_BYTES)
    header = _MAGIC + bytes((_VERSION, _ALG_AES256GCM)) + key_id + nonce
    total = sum(len(p) for p in parts)
    out = bytearray(HEADER_BYTES + total + 16 + 15)  # update_into wants block-size slack
    out[:HEADER_BYTES] = header
    view = memoryview(out)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(header)
    pos = HEADER_BYTES
    for part in parts:
        pos += encryptor.update_into(part, view[pos:])
    encryptor.finalize()
    view.release()
    out[pos : pos + 16] = encryptor.tag
    del out[pos + 16 :]
    return out


def envelope_key_id(envelope: bytes) -> bytes:
    """The key id an envelope claims (unauthenticated until ``open_sealed`` succeeds)."""
    if len(envelope) < ENVELOPE_OVERHEAD or envelope[:4] != _MAGIC:
        raise InvalidEnvelopeError()
    return bytes(envelope[6 : 6 + KEY_ID_BYTES])


def open_sealed(key: bytes, envelope: bytes) -> bytes:
    """Verify then decrypt an envelope made by ``seal``. Raises InvalidEnvelopeError."""
    if (
        len(envelope) < ENVELOPE_OVERHEAD
        or envelope[:4] != _MAGIC
        or envelope[4] != _VERSION
        or envelope[5] != _ALG_AES256GCM
        or len(key) != KEY_BYTES
    ):
        raise InvalidEnvelopeError()
    header = bytes(envelope[:HEADER_BYTES])
    nonce = header[-NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, bytes(envelope[HEADER_BYTES:]), header)
    except InvalidTag as e:
        raise InvalidEnvelopeError() from e


def keyed_hash(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key``: a name that reveals nothing without the key.

    Record ids on the public chain are these: a plain hash of a DICOM UID could be confirmed
    by anyone who guesses the UID (they are often an organisation root plus a date).
    """
    if len(key) < KEY_BYTES:
        raise CryptoError("a keyed hash needs a key of at least 32 bytes")
    return hmac.new(key, message, hashlib.sha256).digest()


@dataclass(frozen=True)
class KeyPair:
    """An HPKE key pair as raw bytes, with the KEM it belongs to."""

    kem: KemName
    public: bytes
    private: bytes


def generate_keypair(kem: KemName = "x25519") -> KeyPair:
    """A new HPKE key pair."""
    xk = x25519.X25519PrivateKey.generate()
    xpub = xk.public_key().public_bytes_raw()
    xpriv = xk.private_bytes_raw()
    if kem == "x25519":
        return KeyPair(kem, xpub, xpriv)
    mk = mlkem.MLKEM768PrivateKey.generate()
    return KeyPair(
        kem,
        mk.public_key().public_bytes_raw() + xpub,
        mk.private_bytes_raw() + xpriv,
    )


def _public(kem: str, raw: bytes) -> Any:
    try:
        if kem == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(raw)
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(raw[:-_X25519_LEN]),
            x25519.X25519PublicKey.from_public_bytes(raw[-_X25519_LEN:]),
        )
    except ValueError as e:
        raise CryptoError(f"not a valid {kem} public key") from e


def _private(kem: str, raw: bytes) -> Any:
    try:
        if kem == "x25519":
            return x25519.X25519PrivateKey.from_private_bytes(raw)
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:_MLKEM_SEED_LEN]),
            x25519.X25519PrivateKey.from_private_bytes(raw[_MLKEM_SEED_LEN:]),
        )
    except ValueError as e:
        raise CryptoError(f"not a valid {kem} private key") from e


def wrap(public: bytes, kem: KemName, secret: bytes, info: bytes) -> bytes:
    """Seal ``secret`` to ``public`` with HPKE; ``info`` binds the wrap to its purpose."""
    body = _SUITES[kem].encrypt(secret, _public(kem, public), info=info)
    return bytes((_KEM_IDS[kem],)) + body


def unwrap(pair: KeyPair, wrapped: bytes, info: bytes) -> bytes:
    """Open a wrap made by ``wrap``. Raises InvalidEnvelopeError on any mismatch."""
    if not wrapped or _KEM_BY_ID.get(wrapped[0]) != pair.kem:
        raise InvalidEnvelopeError()
    try:
        return _SUITES[pair.kem].decrypt(wrapped[1:], _private(pair.kem, pair.private), info=info)
    except (ValueError, InvalidTag, CryptoError) as e:
        raise InvalidEnvelopeError() from e


# --- private keys at rest ---------------------------------------------------------------

_ARGON2 = {"time_cost": 3, "memory_cost": 64 * 1024, "parallelism": 2}


def _kdf(passphrase: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hash_secret_raw(
        passphrase.encode(),
        salt,
        time_cost=params["time_cost"],
        memory_cost=params["memory_cost"],
        parallelism=params["parallelism"],
        hash_len=KEY_BYTES,
        type=Type.ID,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def protect_keypair(pair: KeyPair, passphrase: str, purpose: str) -> str:
    """Serialize a key pair as JSON with the private half encrypted under the passphrase."""
    salt = os.urandom(16)
    key = _kdf(passphrase, salt, _ARGON2)
    sealed = seal(key, b"\0" * KEY_ID_BYTES, pair.private)
    doc = {
        "format": "ztbridge-keypair-v1",
        "purpose": purpose,
        "kem": pair.kem,
        "public": _b64(pair.public),
        "kdf": {"name": "argon2id", "salt": _b64(salt), **_ARGON2},
        "private_sealed": _b64(sealed),
    }
    return json.dumps(doc, indent=2) + "\n"


def read_public(document: str) -> tuple[KemName, bytes]:
    """The KEM and public key of a protected key pair document (no passphrase needed)."""
    try:
        doc = json.loads(document)
        kem = doc["kem"]
        if kem not in _KEM_IDS:
            raise ValueError(kem)
        return kem, base64.b64decode(doc["public"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError("key file is damaged or not a ztbridge key pair") from e


def unlock_keypair(document: str, passphrase: str) -> KeyPair:
    """Decrypt a document made by ``protect_keypair``. Wrong passphrase: InvalidEnvelopeError."""
    kem, public = read_public(document)
    doc = json.loads(document)
    kdf = doc["kdf"]
    key = _kdf(passphrase, base64.b64decode(kdf["salt"]), kdf)
    private = open_sealed(key, base64.b64decode(doc["private_sealed"]))
    return KeyPair(kem, public, private)
