"""Each account's own keys: an Ethereum account (secp256k1, signs the user's grants) and an
HPKE key pair (study keys are wrapped to it), generated when the account is created.

At rest the private halves exist only sealed:

* under a key derived from the user's password (argon2id with a salt of its own, not the
  password hash's), so the gateway can open them only while the user logs in;
* under a key derived from a one-time enrollment token, between account creation (or a
  recovery) and the moment the user chooses a password;
* escrowed to the custodian's HPKE public key, so a lost password is recoverable by the admin
  ceremony (``ztbridge user recover``, custodian passphrase), never by the gateway alone.

Unlocked keys (``UnlockedKeys``) live in memory for one session or token family and are wiped
when it ends. Python cannot promise that no copy of a bytes object survives (the HPKE and
signing libraries take their own), so wiping is best effort: the bytearrays this module owns
are zeroed, and nothing else keeps a reference.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from argon2.low_level import Type, hash_secret_raw

from gateway import crypto
from gateway.accounts.passwords import Argon2Params
from gateway.errors import CryptoError, InvalidEnvelopeError
from gateway.keys import CustodianPublic

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

_NO_KEY_ID = b"\0" * crypto.KEY_ID_BYTES
_ESCROW_INFO = b"ztbridge/user-keys-escrow/v1/"
_FORMAT = "ztbridge-user-keys-v1"


@dataclass
class UnlockedKeys:
    """A user's private keys in memory; ``wipe`` zeroes them."""

    address: str
    kem: crypto.KemName
    hpke_public: bytes
    _eth: bytearray = field(repr=False)
    _hpke: bytearray = field(repr=False)

    @property
    def wiped(self) -> bool:
        """Whether ``wipe`` ran (the keys can no longer be used)."""
        return not any(self._eth) and not any(self._hpke)

    def hpke_pair(self) -> crypto.KeyPair:
        """The HPKE key pair, to open study key wraps."""
        if self.wiped:
            raise CryptoError("these keys were wiped at the end of their session")
        return crypto.KeyPair(self.kem, self.hpke_public, bytes(self._hpke))

    def eth_account(self) -> LocalAccount:
        """The Ethereum signer (the user's own grants and revokes)."""
        if self.wiped:
            raise CryptoError("these keys were wiped at the end of their session")
        from eth_account import Account

        acct: LocalAccount = Account.from_key(bytes(self._eth))
        return acct

    def wipe(self) -> None:
        """Zero the private keys."""
        for buf in (self._eth, self._hpke):
            buf[:] = b"\0" * len(buf)

    def payload(self) -> bytes:
        """The serialized private keys (only to seal them again)."""
        return json.dumps(
            {
                "format": _FORMAT,
                "address": self.address,
                "kem": self.kem,
                "hpke_public": _b64(self.hpke_public),
                "hpke_private": _b64(bytes(self._hpke)),
                "eth_private": bytes(self._eth).hex(),
            }
        ).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate(kem: crypto.KemName) -> UnlockedKeys:
    """A new Ethereum account and HPKE key pair."""
    from eth_account import Account

    acct = Account.create()
    pair = crypto.generate_keypair(kem)
    return UnlockedKeys(
        str(acct.address), kem, pair.public, bytearray(bytes(acct.key)), bytearray(pair.private)
    )


def from_payload(payload: bytes) -> UnlockedKeys:
    """Parse what ``UnlockedKeys.payload`` made; CryptoError if it is not that."""
    try:
        doc: dict[str, Any] = json.loads(payload)
        if doc.get("format") != _FORMAT or doc["kem"] not in ("x25519", "mlkem768-x25519"):
            raise ValueError("format")
        return UnlockedKeys(
            str(doc["address"]),
            doc["kem"],
            base64.b64decode(doc["hpke_public"]),
            bytearray(bytes.fromhex(doc["eth_private"])),
            bytearray(base64.b64decode(doc["hpke_private"])),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise CryptoError("sealed user keys are damaged") from e


def _password_key(password: str, salt: bytes, p: Argon2Params) -> bytes:
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=p.time_cost,
        memory_cost=p.memory_kib,
        parallelism=p.parallelism,
        hash_len=crypto.KEY_BYTES,
        type=Type.ID,
    )


def seal_with_password(keys: UnlockedKeys, password: str, params: Argon2Params) -> bytes:
    """The private keys sealed under argon2id(password, fresh salt) (parameters recorded)."""
    salt = os.urandom(16)
    sealed = crypto.seal(_password_key(password, salt, params), _NO_KEY_ID, keys.payload())
    doc = {
        "kdf": "argon2id",
        "salt": _b64(salt),
        "m": params.memory_kib,
        "t": params.time_cost,
        "p": params.parallelism,
        "sealed": _b64(sealed),
    }
    return json.dumps(doc).encode()


def open_with_password(blob: bytes, password: str) -> UnlockedKeys:
    """Open what ``seal_with_password`` made; InvalidEnvelopeError for a wrong password."""
    try:
        doc = json.loads(blob)
        params = Argon2Params(int(doc["m"]), int(doc["t"]), int(doc["p"]))
        salt, sealed = base64.b64decode(doc["salt"]), base64.b64decode(doc["sealed"])
    except (ValueError, KeyError, TypeError) as e:
        raise CryptoError("sealed user keys are damaged") from e
    return from_payload(crypto.open_sealed(_password_key(password, salt, params), sealed))


def _token_key(token: str) -> bytes:
    # The token is 256 random bits: a keyed PRF suffices (no slow KDF), and this is another
    # function of it than the SHA-256 the index stores to find the token.
    return crypto.derive_key(token.encode(), "enrollment token keys v1")


def seal_with_token(keys: UnlockedKeys, token: str) -> bytes:
    """The private keys sealed under a key derived from an enrollment token."""
    return crypto.seal(_token_key(token), _NO_KEY_ID, keys.payload())


def open_with_token(sealed: bytes, token: str) -> UnlockedKeys:
    """Open what ``seal_with_token`` made."""
    try:
        return from_payload(crypto.open_sealed(_token_key(token), sealed))
    except InvalidEnvelopeError as e:
        raise CryptoError("the enrollment link does not open these keys") from e


def escrow(keys: UnlockedKeys, custodian: CustodianPublic) -> bytes:
    """The private keys HPKE-sealed to the custodian (bound to the account's address)."""
    info = _ESCROW_INFO + keys.address.lower().encode()
    return crypto.wrap(custodian.public, custodian.kem, keys.payload(), info)


def open_escrow(wrap: bytes, address: str, custodian: crypto.KeyPair) -> UnlockedKeys:
    """The private keys from their escrow, with the unlocked custodian key pair."""
    try:
        payload = crypto.unwrap(custodian, wrap, _ESCROW_INFO + address.lower().encode())
    except InvalidEnvelopeError as e:
        raise CryptoError(f"the escrow of {address} does not open with this custodian key") from e
    keys = from_payload(payload)
    if keys.address.lower() != address.lower():
        raise CryptoError(f"the escrow of {address} holds another account's keys")
    return keys
