"""The presentation contexts we accept: every Storage SOP Class pynetdicom knows, every
transfer syntax we can store as received, plus Verification."""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import _STORAGE_CLASSES

VERIFICATION = "1.2.840.10008.1.1"

# Uncompressed first, then the compressed families. Data sets are stored exactly as they
# arrive, so accepting a syntax needs no codec: only that its encoding is explicit VR LE.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",  # JPEG 2000 Part 2 Multi-component Lossless
    "1.2.840.10008.1.2.4.93",  # JPEG 2000 Part 2 Multi-component
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


def storage_contexts() -> list[PresentationContext]:
    """One context per Storage SOP Class, each offering every syntax above."""
    return [
        build_context(UID(uid), list(TRANSFER_SYNTAXES))
        for uid in sorted(set(_STORAGE_CLASSES.values()))
    ]


def verification_context() -> PresentationContext:
    """C-ECHO."""
    return build_context(VERIFICATION, ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
