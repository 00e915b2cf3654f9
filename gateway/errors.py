"""One error root and a few families, so callers can catch by what went wrong, not by library.

Third-party exceptions are re-raised as one of these with ``from e`` at the boundary that
called the library, so nothing above the gateway ever has to know pydicom, SQLAlchemy or
cryptography exist.
"""

from __future__ import annotations


class ZtbridgeError(Exception):
    """Root of every error ztbridge raises on purpose."""


class ConfigError(ZtbridgeError):
    """Settings or key material are missing or invalid; the message names the key and the fix."""


class InvalidInputError(ZtbridgeError):
    """Input from outside (a dataset, a file, a CLI argument) is not acceptable."""


class DatasetRefusedError(InvalidInputError):
    """A dataset fails validation; carries the DIMSE status the DICOM edge should answer."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class UidRefusedError(DatasetRefusedError):
    """One of the UIDs an instance is keyed on is missing or not a valid UID (PS3.5 9.1).

    Its own class because STOW-RS answers it 400 for the whole request: a response names
    each instance by its UIDs (UI, at most 64 characters), so one it cannot name is a
    malformed request, not a failed instance (C-STORE still answers 0xA900)."""


class NotFoundError(ZtbridgeError):
    """Something asked for by identifier does not exist."""


class CryptoError(ZtbridgeError):
    """Key material could not be used."""


class InvalidEnvelopeError(CryptoError):
    """Opaque: a ciphertext failed authentication (tampered, truncated or the wrong key).

    Deliberately says nothing about which of these it was, like Fernet's InvalidToken.
    """

    def __init__(self) -> None:
        super().__init__("ciphertext failed authentication")


class StorageError(ZtbridgeError):
    """The content store or the index could not durably do what was asked."""


class StoreLockedError(StorageError):
    """The content store is open for writing in another process (or another instance here).

    Its own class so callers can tell "stop the other process" from a failing disk without
    reading the message.
    """


class IntegrityError(StorageError):
    """Stored bytes no longer match their content address or recorded hash."""


class AuditError(ZtbridgeError):
    """The audit log could not be written or does not verify."""


class KeyUnavailableError(CryptoError):
    """A study key could not be had from the key provider (no wrap, or not ours to open).

    Names the key id only: never the key, the wrap or the custodian's material.
    """


class RetrieveError(ZtbridgeError):
    """An instance could not be read back whole and verified (``gateway.retrieve``).

    ``kind`` says what failed, for callers that report it (``verify``): ``missing`` (a block
    is not in the store), ``damaged`` (a block does not match its CID), ``unreadable`` (the
    store failed), ``key`` (no study key), ``unauthentic`` (an envelope tag failed),
    ``format`` (not a Part-10 file, or a header of another instance), ``size`` / ``hash``
    (the plaintext differs from what the index recorded). The message names the SOP Instance
    UID and never carries key material.
    """

    def __init__(self, sop_instance_uid: str, kind: str, what: str) -> None:
        super().__init__(f"instance {sop_instance_uid}: {what}")
        self.sop_instance_uid = sop_instance_uid
        self.kind = kind
        self.what = what


class InstanceIntegrityError(RetrieveError, IntegrityError):
    """An instance's stored bytes fail a check: CID, envelope tag, size or SHA-256."""


class InstanceMissingError(RetrieveError, NotFoundError):
    """An instance's object (or a block of it) is not in the content store."""
