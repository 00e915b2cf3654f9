"""Identifying attributes sealed in the index, and blind indexes for exact matches.

Why: the index database (and every backup of it) would otherwise hold patient names, birth
dates and Patient IDs in clear, contradicting "encrypted before it touches disk". Each such
value is sealed with AES-256-GCM under a sub-key of the *index key*, with associated data
naming its table, column and row, so a value moved to another row or column fails to open.
Exact-match searches (PatientID, PatientID + issuer, AccessionNumber) compare keyed blind
indexes (HMAC-SHA256 under another sub-key); a wildcard name match decrypts only the rows
already narrowed to what the caller may see.

The index key is never kept in the data folder: ``index.key`` names where it comes from
(``file:PATH``, ``env:NAME``, or ``credential:NAME`` for a systemd credential in
``$CREDENTIALS_DIRECTORY``). In development with no setting, a key file is made beside the
home folder (``<home>.index-key``, not inside it) with a warning; in production a missing key
is a ``ConfigError``. Whoever has the database without the key sees UIDs, dates, sizes, CIDs
and modalities, not who the patient is.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from gateway import crypto
from gateway.durable import create_file
from gateway.errors import ConfigError, CryptoError
from gateway.settings import Settings

log = logging.getLogger("ztbridge.index")

_SETTING = "setting 'index.key' (env ZTBRIDGE_INDEX__KEY)"
_FORMS = "expected file:PATH, env:NAME or credential:NAME"


class IndexCipher:
    """Seals, opens and blinds index values under one index key (32 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != crypto.KEY_BYTES:
            raise ConfigError(f"the index key must be 32 bytes (64 hex digits); {_SETTING}")
        self._fields = crypto.FieldCipher(crypto.derive_key(key, "index fields v1"))
        self._blind_key = crypto.derive_key(key, "index blind v1")

    @staticmethod
    def _ad(table: str, column: str, row: str) -> bytes:
        return f"{table}\0{column}\0{row}".encode()

    def seal(self, table: str, column: str, row: str, value: bytes) -> bytes:
        """``value`` sealed for exactly this table, column and row identity."""
        return self._fields.seal(self._ad(table, column, row), value)

    def open(self, table: str, column: str, row: str, sealed: bytes) -> bytes:
        """The value ``seal`` sealed for this place; ``InvalidEnvelopeError`` otherwise."""
        return self._fields.open(self._ad(table, column, row), sealed)

    def seal_values(self, table: str, column: str, row: str, values: Any) -> bytes | None:
        """A DICOM JSON ``Value`` list sealed as compact JSON; None for no value."""
        if not values:
            return None
        text = json.dumps(values, separators=(",", ":"), ensure_ascii=False)
        return self.seal(table, column, row, text.encode())

    def open_values(self, table: str, column: str, row: str, sealed: bytes | None) -> list[Any]:
        """The ``Value`` list ``seal_values`` sealed ([] for none)."""
        if sealed is None:
            return []
        found: list[Any] = json.loads(self.open(table, column, row, sealed))
        return found

    def blind(self, purpose: str, value: str) -> str:
        """A keyed blind index (hex) of ``value`` for one ``purpose``: equal values give equal
        blinds, nothing else can be learnt or confirmed without the index key."""
        message = purpose.encode() + b"\0" + value.encode()
        return crypto.keyed_hash(self._blind_key, message).hex()

    def patient_id_blind(self, patient_id: str) -> str:
        """Blind of a Patient ID alone (matches whatever the issuer)."""
        return self.blind("PatientID", patient_id)

    def patient_key(self, patient_id: str, issuer: str, study_uid: str) -> str:
        """Identity of a patient row: Patient ID with its issuer; an instance without a
        Patient ID gets a patient of its own per study (unidentified patients are not one)."""
        if not patient_id:
            return self.blind("unidentified", study_uid)
        return self.blind("PatientID+Issuer", f"{patient_id}\0{issuer}")

    def accession_blind(self, accession: str) -> str:
        """Blind of an Accession Number."""
        return self.blind("AccessionNumber", accession)


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != crypto.KEY_BYTES:
        raise ConfigError(f"the index key from {where} is not 64 hex digits (32 bytes); {_SETTING}")
    return key


def default_key_path(home: Path) -> Path:
    """Where development keeps the index key: beside the home folder, never inside it."""
    return home.parent / f"{home.name}.index-key"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _create_key_file(path: Path) -> bytes:
    """A new random key in ``path`` through the one durable writer; if another process made
    it first (or it exists), that key is the one used."""
    key = secrets.token_bytes(crypto.KEY_BYTES)
    if not create_file(path, (key.hex() + "\n").encode()):
        return _parse_key(path.read_text(), str(path))
    return key


def load_index_key(settings: Settings) -> bytes:
    """The index key named by ``index.key``; see the module docstring for the sources."""
    source = settings.index.key.strip()
    home = settings.home
    if not source:
        if settings.environment != "development":
            raise ConfigError(
                f"no index key: {_SETTING} must name where the key that seals patient data in"
                " the index comes from (file:PATH, env:NAME or credential:NAME), outside the"
                " data folder"
            )
        path = default_key_path(home)
        if not path.exists():
            log.warning(
                "development: created the index key %s beside the data folder; in production"
                " set index.key (file:, env: or credential:) and keep the key away from the"
                " data and its backups",
                path,
            )
            return _create_key_file(path)
        return _parse_key(path.read_text(), str(path))
    kind, _, name = source.partition(":")
    if not name:
        raise ConfigError(
            f"{_SETTING} is {source!r}: expected file:PATH, env:NAME or credential:NAME"
        )
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"the environment variable {name} named by {_SETTING} is not set")
        return _parse_key(value, f"${name}")
    if kind == "credential":
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                f"{_SETTING} names the systemd credential {name!r}, but CREDENTIALS_DIRECTORY"
                " is not set (add LoadCredential= to the service unit)"
            )
        path = Path(folder) / name
    elif kind == "file":
        path = Path(name).expanduser()
    else:
        raise ConfigError(
            f"{_SETTING} is {source!r}: expected file:PATH, env:NAME or credential:NAME"
        )
    if _inside(path, home):
        raise ConfigError(
            f"the index key {path} is inside the data folder {home}; {_SETTING} must name a"
            " key kept apart from the data it protects (and from its backups)"
        )
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the index key {path} named by {_SETTING}: {e}") from e
    return _parse_key(text, str(path))


def open_cipher(settings: Settings) -> IndexCipher:
    """The index cipher for these settings."""
    try:
        return IndexCipher(load_index_key(settings))
    except CryptoError as e:
        raise ConfigError(f"unusable index key: {e}") from e
