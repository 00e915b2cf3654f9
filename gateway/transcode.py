"""An instance re-encoded in another transfer syntax, where pydicom can do it faithfully.

Why so narrow: WADO-RS returns instances as stored by default (byte for byte what the
modality sent); a transcoded copy is only made when a client asks for a syntax, and only
between syntaxes that lose nothing here: the native little-endian ones and Deflated Explicit
VR Little Endian re-encode the same elements; a compressed instance is decoded to native
pixels only with a decoder plugin present (pydicom's ``get_decoder(...).is_available``), and a
native one is compressed only losslessly with an available encoder (RLE Lossless always;
JPEG 2000 Lossless with pylibjpeg-openjpeg). Anything else is ``TranscodeError`` before any
byte is sent (WADO-RS answers 406).
"""

from __future__ import annotations

import io
from typing import Any

from gateway.errors import ZtbridgeError
from gateway.frames import DEFLATED_LE, NATIVE, read_dataset

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
UNCOMPRESSED = frozenset({IMPLICIT_LE, EXPLICIT_LE, DEFLATED_LE})
#: Lossless compressions we may produce (with the encoder available).
LOSSLESS_TARGETS = frozenset({"1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"})


class TranscodeError(ZtbridgeError):
    """The instance cannot be given in the transfer syntax asked for."""


def _decoder_available(syntax: str) -> bool:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        return bool(get_decoder(syntax).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def _encoder_available(syntax: str) -> bool:
    from pydicom.pixels.encoders.base import get_encoder

    try:
        return bool(get_encoder(syntax).is_available)
    except (NotImplementedError, ValueError, KeyError):
        return False


def can_transcode(stored: str, target: str) -> bool:
    """Whether ``transcode`` can turn an instance stored in ``stored`` into ``target``."""
    if stored == target:
        return True
    if stored == BIG_ENDIAN:
        return False
    plain = stored in UNCOMPRESSED  # big endian is not re-ordered here (pixels would swap)
    if target in UNCOMPRESSED:
        return plain or _decoder_available(stored)
    if target in LOSSLESS_TARGETS and plain:
        return _encoder_available(target)
    return False


def transcode(part10: bytes, target: str) -> bytes:
    """The instance ``part10`` (verified Part-10 bytes) re-encoded as ``target``."""
    ds: Any = read_dataset(part10)
    stored = str(ds.file_meta.TransferSyntaxUID)
    if stored == target:
        return part10
    if not can_transcode(stored, target):
        raise TranscodeError(f"{stored} cannot be transcoded to {target} here")
    try:
        if stored not in NATIVE and stored != DEFLATED_LE:
            ds.decompress()  # to Explicit VR Little Endian, pixels decoded
        if target in LOSSLESS_TARGETS:
            ds.compress(target)
        else:
            ds.file_meta.TransferSyntaxUID = target
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
    except Exception as e:  # pydicom and its plugins raise many kinds
        raise TranscodeError(f"{stored} could not be transcoded to {target}: {e}") from e
    return out.getvalue()
