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
