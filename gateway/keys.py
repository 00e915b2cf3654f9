"""Key custody: the hospital's custodian key pair and the per-study data keys.

The custodian private key exists on disk only encrypted under a passphrase; ingest needs
just the public half (to seal each study key), so the gateway never holds the private key
while it receives images. Study keys live in memory while a study is arriving and are
forgotten after a quiet period; a study that resumes after that gets a fresh key, which is
why instances record their key id rather than assuming one key per study.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from gateway import crypto
from gateway.clock import Clock
from gateway.durable import create_file
from gateway.errors import ConfigError, InvalidEnvelopeError

CUSTODIAN_FILE = "custodian.json"
STUDY_KEY_INFO = b"ztbridge/study-key/v1/"


def study_key_info(key_id_hex: str) -> bytes:
    """HPKE ``info`` for a study key wrap: binds the wrap to its key id."""
    return STUDY_KEY_INFO + key_id_hex.encode()


@dataclass(frozen=True)
class CustodianPublic:
    """What ingest needs of the custodian: its KEM and public key."""

    kem: crypto.KemName
    public: bytes


def create_private_file(path: Path, text: str) -> bool:
    """Create an owner-only file atomically unless it exists; False if it already did.

    A thin alias of ``durable.create_file`` (kept for its callers): two processes starting
    at once can never both believe their key is the custodian key.
    """
    return create_file(path, text.encode())


def ensure_custodian(
    keys_dir: Path, kem: crypto.KemName, passphrase: str | None
) -> tuple[CustodianPublic, str | None]:
    """Load the custodian public key, creating the key pair on first start.

    Returns the public key and, only when this call generated the passphrase itself, that
    passphrase, which the caller must show once: it is stored nowhere.
    """
    path = keys_dir / CUSTODIAN_FILE
    if path.exists():
        found_kem, public = crypto.read_public(path.read_text())
        return CustodianPublic(found_kem, public), None
    generated = None
    if not passphrase:
        generated = passphrase = secrets.token_urlsafe(24)
    pair = crypto.generate_keypair(kem)
    if not create_private_file(path, crypto.protect_keypair(pair, passphrase, "custodian")):
        # Another process created the key first: use its key, and show no passphrase.
        found_kem, public = crypto.read_public(path.read_text())
        return CustodianPublic(found_kem, public), None
    return CustodianPublic(pair.kem, pair.public), generated


def unlock_custodian(keys_dir: Path, passphrase: str | None) -> crypto.KeyPair:
    """The custodian key pair, decrypted. Needed for export and recovery, never for ingest."""
    path = keys_dir / CUSTODIAN_FILE
    if not path.exists():
        raise ConfigError(f"no custodian key at {path}: run 'ztbridge up' once to create it")
    if not passphrase:
        raise ConfigError("the custodian passphrase is needed: set ZTBRIDGE_CUSTODIAN_PASSPHRASE")
    try:
        return crypto.unlock_keypair(path.read_text(), passphrase)
    except InvalidEnvelopeError as e:
        raise ConfigError(
            "the custodian passphrase is wrong (ZTBRIDGE_CUSTODIAN_PASSPHRASE)"
        ) from e


@dataclass(frozen=True)
class StudyKey:
    """A study data key with its id and the custodian's wrap of it."""

    key_id: str
    key: bytes
    custodian_wrap: bytes
    kem: str


class StudyKeyCache:
    """Study keys in memory, per study, forgotten after ``idle_seconds`` unused.

    ``issue`` returns the cached key or a new one (with ``is_new``); a new key must be
    persisted by the caller and then confirmed with ``remember`` — only keys whose wrap is
    committed to the index may be reused, or an instance could name a key that never landed.
    """

    def __init__(self, custodian: CustodianPublic, clock: Clock, idle_seconds: float) -> None:
        self._custodian = custodian
        self._clock = clock
        self._idle = idle_seconds
        self._keys: dict[str, tuple[StudyKey, float]] = {}
        self._lock = threading.Lock()

    def issue(self, study_uid: str) -> tuple[StudyKey, bool]:
        """The study's current key, or a fresh one (True) that is not yet remembered."""
        now = self._clock.monotonic()
        with self._lock:
            found = self._keys.get(study_uid)
            if found and now - found[1] <= self._idle:
                self._keys[study_uid] = (found[0], now)
                return found[0], False
            self._keys.pop(study_uid, None)
        key_id = crypto.new_key_id().hex()
        key = crypto.new_data_key()
        wrap = crypto.wrap(self._custodian.public, self._custodian.kem, key, study_key_info(key_id))
        return StudyKey(key_id, key, wrap, self._custodian.kem), True

    def remember(self, study_uid: str, key: StudyKey) -> None:
        """Make a committed key the study's current key."""
        with self._lock:
            self._keys.setdefault(study_uid, (key, self._clock.monotonic()))

    def forget_idle(self) -> int:
        """Drop keys unused for longer than the idle period; return how many."""
        now = self._clock.monotonic()
        with self._lock:
            stale = [uid for uid, (_, t) in self._keys.items() if now - t > self._idle]
            for uid in stale:
                del self._keys[uid]
        return len(stale)
