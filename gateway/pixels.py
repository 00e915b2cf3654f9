"""Does an instance's pixel geometry agree with its Pixel Data? A pure check, before decoding.

Why: Rows, Columns, Samples per Pixel, Bits Allocated and Number of Frames are the sender's
claims; a decoder that trusts them allocates ``rows * columns * samples * bits / 8 * frames``
bytes before it looks at the data. A hostile instance (65535 x 65535, 65535 bits, 3 samples,
2^31-1 frames, 16 bytes of Pixel Data) makes that an allocation of ~10^24 bytes. ztbridge
stores such an instance as received (a PACS keeps what it is given, and it is read back byte
for byte), flags it in the index (``instances.pixel_flag``), and:

**Every later pixel decoder — thumbnails, rendered images, frame retrieval, anything that
turns Pixel Data into pixels — must call ``check_geometry`` on the instance's facts first,
and must not decode unless ``decodable``; it may allocate at most ``frame_bytes`` per frame
(and, for native data, read only ``expected_bytes``).** The index flag is for listing and
reporting; the check is cheap enough to repeat at decode time and must be, because the facts
come from the header it decodes, not from a column.

Native (uncompressed) Pixel Data must hold exactly the bytes the geometry needs, padded to
even length (PS3.5 8.1.1; Bits Allocated 1 packs eight pixels a byte). Encapsulated Pixel
Data cannot be checked against its bytes before decoding: the attributes must be valid, a
frame bounded by ``MAX_FRAME_BYTES``, and outside video transfer syntaxes no more frames than
fragments (PS3.5 A.4: one or more fragments per frame, after the Basic Offset Table item).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NamedTuple

MAX_FRAME_BYTES = 1 << 31
"""Largest decoded frame a decoder may be asked to allocate (2 GiB): past it, invalid."""

# Transfer syntaxes whose stream holds many frames in few fragments (PS3.5 8.2.5-8.2.8).
VIDEO_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.100",  # MPEG2 MP@ML
        "1.2.840.10008.1.2.4.100.1",
        "1.2.840.10008.1.2.4.101",  # MPEG2 MP@HL
        "1.2.840.10008.1.2.4.101.1",
        "1.2.840.10008.1.2.4.102",  # MPEG-4 AVC/H.264
        "1.2.840.10008.1.2.4.102.1",
        "1.2.840.10008.1.2.4.103",
        "1.2.840.10008.1.2.4.103.1",
        "1.2.840.10008.1.2.4.104",
        "1.2.840.10008.1.2.4.104.1",
        "1.2.840.10008.1.2.4.105",
        "1.2.840.10008.1.2.4.105.1",
        "1.2.840.10008.1.2.4.106",
        "1.2.840.10008.1.2.4.106.1",
        "1.2.840.10008.1.2.4.107",  # HEVC/H.265
        "1.2.840.10008.1.2.4.108",
    }
)


class Verdict(StrEnum):
    """What ``check_geometry`` found."""

    NO_PIXELS = "no-pixels"  # no Pixel Data element: nothing to decode
    CONSISTENT = "consistent"  # native, exactly the bytes the geometry needs (even-padded)
    ENCAPSULATED = "encapsulated"  # compressed frames: valid geometry, checked per frame
    EXCESS = "excess"  # native, more bytes than needed: decodable, reading expected_bytes only
    SHORT = "short"  # native, fewer bytes than the geometry needs: not decodable
    INVALID = "invalid"  # an attribute missing or out of range: not decodable


class PixelFacts(NamedTuple):
    """An instance's geometry as its header claims it, and what its Pixel Data holds.

    (Named tuples, not dataclasses: built for every instance on the ingest path, and a
    frozen dataclass costs a few microseconds to construct.)"""

    rows: int | None
    columns: int | None
    samples_per_pixel: int | None
    bits_allocated: int | None
    number_of_frames: int | None  # None: absent (a single-frame IOD)
    pixel_length: int | None  # value length; -1: encapsulated; None: no Pixel Data
    fragments: int = 0  # encapsulated items, the Basic Offset Table included
    transfer_syntax: str = ""


class GeometryVerdict(NamedTuple):
    """The answer: whether to decode, and how much a decoder may allocate."""

    verdict: Verdict
    reason: str
    frame_bytes: int | None = None  # one decoded frame; None when the geometry is invalid
    expected_bytes: int | None = None  # all frames, native; None when not native or invalid

    @property
    def decodable(self) -> bool:
        """Whether a decoder may go on (within ``frame_bytes`` a frame)."""
        return self.verdict in (Verdict.CONSISTENT, Verdict.ENCAPSULATED, Verdict.EXCESS)

    @property
    def flag(self) -> str | None:
        """The index flag (``instances.pixel_flag``): None when Pixel Data agrees or is absent."""
        if self.verdict in (Verdict.SHORT, Verdict.EXCESS, Verdict.INVALID):
            return self.verdict.value
        return None


_LIMITS = (
    ("Rows", 1, 0xFFFF),
    ("Columns", 1, 0xFFFF),
    ("Samples per Pixel", 1, 4),
    ("Bits Allocated", 1, 64),
)


def _invalid(reason: str) -> GeometryVerdict:
    return GeometryVerdict(Verdict.INVALID, reason)


def check_geometry(facts: PixelFacts) -> GeometryVerdict:
    """Check the geometry against the Pixel Data (see the module doc: decoders call this
    before allocating anything). Pure; integers only, so absurd values cannot overflow."""
    if facts.pixel_length is None:
        return GeometryVerdict(Verdict.NO_PIXELS, "no Pixel Data")
    limits = _LIMITS
    values = (facts.rows, facts.columns, facts.samples_per_pixel, facts.bits_allocated)
    for (name, low, high), value in zip(limits, values, strict=True):
        if value is None:
            return _invalid(f"{name} is missing")
        if not low <= value <= high:
            return _invalid(f"{name} {value} is outside {low}..{high}")
    assert facts.rows and facts.columns and facts.samples_per_pixel and facts.bits_allocated
    bits = facts.bits_allocated
    if bits != 1 and bits % 8:
        return _invalid(f"Bits Allocated {bits} is neither 1 nor a multiple of 8")
    frames = 1 if facts.number_of_frames is None else facts.number_of_frames
    if frames < 1:
        return _invalid(f"Number of Frames {frames} is not a positive number")
    pixels = facts.rows * facts.columns * facts.samples_per_pixel
    frame_bytes = (pixels * bits + 7) // 8
    if frame_bytes > MAX_FRAME_BYTES:
        return _invalid(f"one frame would decode to {frame_bytes} bytes")
    if facts.pixel_length < 0:
        if facts.transfer_syntax not in VIDEO_SYNTAXES and frames > max(facts.fragments - 1, 0):
            return _invalid(f"{frames} frames claimed in {max(facts.fragments - 1, 0)} fragments")
        return GeometryVerdict(
            Verdict.ENCAPSULATED, "encapsulated; decoded frames to be checked", frame_bytes
        )
    expected = (pixels * frames * bits + 7) // 8
    if expected <= facts.pixel_length <= expected + expected % 2:  # the common case, first
        return GeometryVerdict(Verdict.CONSISTENT, "consistent", frame_bytes, expected)
    verdict = Verdict.SHORT if facts.pixel_length < expected else Verdict.EXCESS
    return GeometryVerdict(
        verdict,
        f"{facts.rows} x {facts.columns} x {facts.samples_per_pixel} samples x {bits} bits"
        f" x {frames} frames need {expected} bytes of Pixel Data, it has {facts.pixel_length}",
        frame_bytes,
        expected,
    )


def _first_int(doc: Mapping[str, Any], tag: str) -> int | None:
    entry = doc.get(tag)
    values = entry.get("Value") if entry else None
    if not values or not isinstance(values[0], int) or isinstance(values[0], bool):
        return None
    return values[0]


def facts_from_doc(
    doc: Mapping[str, Any],
    pixel_length: int | None,
    fragments: int = 0,
    transfer_syntax: str = "",
) -> PixelFacts:
    """The facts from a DICOM JSON document (``gateway.metadata.read_indexed``'s, or a
    header object's) and the Pixel Data's length as scanned."""
    return PixelFacts(
        rows=_first_int(doc, "00280010"),
        columns=_first_int(doc, "00280011"),
        samples_per_pixel=_first_int(doc, "00280002"),
        bits_allocated=_first_int(doc, "00280100"),
        number_of_frames=_first_int(doc, "00280008"),
        pixel_length=pixel_length,
        fragments=fragments,
        transfer_syntax=transfer_syntax,
    )
