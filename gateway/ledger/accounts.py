"""The gateway's on-chain identities and the record-id secret, as owner-only key files.

Three Ethereum accounts per data folder, created on first use under ``$ZTBRIDGE_HOME/keys``:

* ``ledger-admin.json`` — ADMIN: deploys the registry and registers users;
* ``ledger-sender.json`` — SENDER: the hot key that anchors studies and audit ranges;
* ``custodian-eth.json`` — the hospital custodian's account (PATIENT role): it owns every
  record whose patient has no account yet. The contract gives an account one role for life,
  hence three accounts rather than one.

Why the admin and sender keys are stored in clear (owner-only, 0600) rather than under a
passphrase: anchoring runs unattended inside ``ztbridge up`` and ``ztbridge import``, which by
design never hold the custodian passphrase (a process that could decrypt every study must not
be the one facing the network). A passphrase for these keys would have to sit in the same
environment as the key file, so it would add ceremony, not secrecy. What limits the damage of
a stolen sender key is the contract: a SENDER can only append records and audit ranges, never
read, change or delete one, and an admin suspends a leaked account with ``suspendUser``. The
admin key can be moved offline once users are registered (deployment is its main use).

The custodian's account key is different: it can grant doctors access to every unlinked
record, so it is sealed with HPKE to the custodian's public key. Creating it needs only that
public key; using it needs the custodian passphrase, exactly like decrypting a study.

The record-id secret (``record-id.key``, 32 random bytes) keys the HMAC that names records
on-chain; without it nobody can tell which study a record id belongs to.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import crypto
from gateway.errors import ConfigError, InvalidEnvelopeError
from gateway.keys import CustodianPublic, create_private_file

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

ADMIN_FILE = "ledger-admin.json"
SENDER_FILE = "ledger-sender.json"
CUSTODIAN_ACCOUNT_FILE = "custodian-eth.json"
RECORD_ID_FILE = "record-id.key"
_PLAIN_FORMAT = "ztbridge-eth-key-v1"
_SEALED_FORMAT = "ztbridge-eth-key-sealed-v1"
CUSTODIAN_ACCOUNT_INFO = b"ztbridge/custodian-eth/v1"
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _local_account(private_key: bytes) -> LocalAccount:
    # Imported here: eth_account costs ~0.4 s to import, and most commands never sign.
    from eth_account import Account

    acct: LocalAccount = Account.from_key(private_key)
    return acct


def _new_private_key() -> tuple[bytes, str]:
    from eth_account import Account

    acct: LocalAccount = Account.create()
    return bytes(acct.key), str(acct.address)


@dataclass(frozen=True)
class GatewayAccounts:
    """The keys anchoring needs, and the custodian account's address (not its key).

    Addresses are read from the key files; the signing accounts are built on first use.
    """

    admin_key: bytes
    admin_address: str
    sender_key: bytes
    sender_address: str
    custodian_address: str
    record_secret: bytes

    @cached_property
    def admin(self) -> LocalAccount:
        """The ADMIN signer."""
        return _local_account(self.admin_key)

    @cached_property
    def sender(self) -> LocalAccount:
        """The SENDER signer (the anchoring hot key)."""
        return _local_account(self.sender_key)


def _read_doc(path: Path, fmt: str) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text())
        if doc["format"] != fmt or not _ADDRESS.match(doc["address"]):
            raise ValueError(doc["format"])
        return dict(doc)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"key file {path} is damaged or not a ztbridge account key") from e


def _plain_key(path: Path, purpose: str) -> tuple[bytes, str]:
    if not path.exists():
        key, address = _new_private_key()
        doc = {
            "format": _PLAIN_FORMAT,
            "purpose": purpose,
            "address": address,
            "private_key": key.hex(),
        }
        if create_private_file(path, json.dumps(doc, indent=2) + "\n"):
            return key, address
    doc = _read_doc(path, _PLAIN_FORMAT)
    try:
        key = bytes.fromhex(doc["private_key"].removeprefix("0x"))
    except (KeyError, ValueError) as e:
        raise ConfigError(f"key file {path} is damaged (private key)") from e
    if len(key) != 32:
        raise ConfigError(f"key file {path} is damaged (private key)")
    return key, doc["address"]


def _custodian_address(path: Path, custodian: CustodianPublic) -> str:
    if not path.exists():
        key, address = _new_private_key()
        sealed = crypto.wrap(custodian.public, custodian.kem, key, CUSTODIAN_ACCOUNT_INFO)
        doc = {
            "format": _SEALED_FORMAT,
            "purpose": "custodian",
            "address": address,
            "sealed_private_key": base64.b64encode(sealed).decode(),
        }
        if create_private_file(path, json.dumps(doc, indent=2) + "\n"):
            return address
    return _read_doc(path, _SEALED_FORMAT)["address"]


def _record_secret(path: Path) -> bytes:
    if not path.exists():
        secret = secrets.token_bytes(32)
        if create_private_file(path, secret.hex() + "\n"):
            return secret
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as e:
        raise ConfigError(f"key file {path} is damaged") from e
    if len(secret) != 32:
        raise ConfigError(f"key file {path} is damaged (not 32 bytes)")
    return secret


def ensure_accounts(keys_dir: Path, custodian: CustodianPublic) -> GatewayAccounts:
    """Load the gateway's accounts and record-id secret, creating any that are missing.

    Creation is race-safe (``create_private_file`` links a complete file into place), so two
    processes starting together end up with the same keys.
    """
    admin_key, admin_address = _plain_key(keys_dir / ADMIN_FILE, "ledger-admin")
    sender_key, sender_address = _plain_key(keys_dir / SENDER_FILE, "ledger-sender")
    return GatewayAccounts(
        admin_key=admin_key,
        admin_address=admin_address,
        sender_key=sender_key,
        sender_address=sender_address,
        custodian_address=_custodian_address(keys_dir / CUSTODIAN_ACCOUNT_FILE, custodian),
        record_secret=_record_secret(keys_dir / RECORD_ID_FILE),
    )


def unlock_custodian_account(keys_dir: Path, custodian: crypto.KeyPair) -> LocalAccount:
    """The custodian's Ethereum account, opened with the custodian key pair (passphrase)."""
    path = keys_dir / CUSTODIAN_ACCOUNT_FILE
    doc = _read_doc(path, _SEALED_FORMAT)
    try:
        sealed = base64.b64decode(doc["sealed_private_key"])
        key = crypto.unwrap(custodian, sealed, CUSTODIAN_ACCOUNT_INFO)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"key file {path} is damaged") from e
    except InvalidEnvelopeError as e:
        raise ConfigError(f"{path} was not sealed to this custodian key") from e
    return _local_account(key)
