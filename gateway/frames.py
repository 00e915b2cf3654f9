"""Frames out of a decrypted instance: as stored, or decoded to native pixels.

Why in the core: frame retrieval (WADO-RS ``/frames``), rendered images and thumbnails all
turn Pixel Data into frames, and ``gateway.pixels`` requires that nothing is cut or decoded
before ``check_geometry`` says the header's geometry agrees with the Pixel Data. Here that
check is made once, on the instance's own header, and every frame is bounded by its
``frame_bytes``.

Native Pixel Data is cut by offset (``frame_bytes`` each, nothing decoded); encapsulated
Pixel Data is walked with pydicom's fragment reader (the Basic/Extended Offset Table when
present, else one frame per fragment or the JPEG end-of-image markers). Decoding a
compressed frame to native pixels uses pydicom's decoders, which need a codec plugin
(pylibjpeg, ...) for most compressed syntaxes: without one, ``FrameError`` (WADO-RS says 406).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from gateway.errors import ZtbridgeError
from gateway.pixels import PixelFacts, check_geometry

NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

#: The media type of a compressed frame (PS3.18 Table 8.7.3-2), by transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class FrameError(ZtbridgeError):
    """The frames asked for cannot be given: no pixels, a bad geometry, a frame number out
    of range, or no decoder for the stored transfer syntax."""

    def __init__(self, reason: str, *, missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.missing = missing  # True: the frame does not exist (404), else not acceptable


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_dataset(part10: bytes) -> Any:
    """The pydicom Dataset of a verified Part-10 instance."""
    import pydicom

    return pydicom.dcmread(io.BytesIO(part10))


@dataclass(frozen=True)
class FrameSource:
    """An instance's pixels, checked: where frames come from."""

    ds: Any
    transfer_syntax: str
    frames: int
    frame_bytes: int
    native: bool

    def stored_media_type(self) -> str:
        """The media type of a frame as stored."""
        if self.native:
            return "application/octet-stream"
        media = FRAME_MEDIA_TYPES.get(self.transfer_syntax)
        if media is None:
            raise FrameError(f"no frame media type for transfer syntax {self.transfer_syntax}")
        return media

    def _check(self, number: int) -> None:
        if not 1 <= number <= self.frames:
            raise FrameError(f"frame {number} is not in 1..{self.frames}", missing=True)

    def stored(self, number: int) -> bytes:
        """Frame ``number`` (1-based) as stored: native bytes, or the compressed frame."""
        self._check(number)
        if self.native:
            start = (number - 1) * self.frame_bytes
            return bytes(self.ds.PixelData[start : start + self.frame_bytes])
        from pydicom.encaps import get_frame

        try:
            return bytes(get_frame(self.ds.PixelData, number - 1, number_of_frames=self.frames))
        except Exception as e:  # pydicom raises ValueError and others on broken fragments
            raise FrameError(f"frame {number} cannot be read: {e}") from e

    def native_little_endian(self, number: int) -> bytes:
        """Frame ``number`` decoded to native little-endian pixels (Explicit VR LE's)."""
        self._check(number)
        if self.native and self.transfer_syntax != "1.2.840.10008.1.2.2":
            return self.stored(number)
        pixels = self.array(number)
        return bytes(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())

    def array(self, number: int) -> Any:
        """Frame ``number`` as a numpy array (decoded with pydicom's decoders)."""
        self._check(number)
        from pydicom.pixels.utils import pixel_array

        try:
            return pixel_array(self.ds, index=number - 1, raw=True)
        except Exception as e:  # no plugin (RuntimeError), a broken stream (ValueError...)
            raise FrameError(
                f"frames in transfer syntax {self.transfer_syntax} cannot be decoded here: {e}"
            ) from e


def frame_source(ds: Any) -> FrameSource:
    """The checked pixels of a dataset (``check_geometry`` first); FrameError if none."""
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if "PixelData" not in ds:
        raise FrameError("the instance has no Pixel Data", missing=True)
    element = ds["PixelData"]
    encapsulated = bool(getattr(element, "is_undefined_length", False)) or syntax not in NATIVE
    length = -1 if encapsulated else len(ds.PixelData)
    fragments = 0
    if encapsulated:
        from pydicom.encaps import parse_fragments

        try:
            fragments = parse_fragments(ds.PixelData)[0]  # the Basic Offset Table item included
        except Exception as e:
            raise FrameError(f"encapsulated Pixel Data does not parse: {e}") from e
    facts = PixelFacts(
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        samples_per_pixel=_int(ds.get("SamplesPerPixel")),
        bits_allocated=_int(ds.get("BitsAllocated")),
        number_of_frames=_int(_number(ds.get("NumberOfFrames"))),
        pixel_length=length,
        fragments=fragments,
        transfer_syntax=syntax,
    )
    verdict = check_geometry(facts)
    if not verdict.decodable or verdict.frame_bytes is None:
        raise FrameError(f"the pixel geometry is not decodable: {verdict.reason}")
    if facts.bits_allocated == 1 and not encapsulated:
        raise FrameError("single-bit frames are not cut on byte boundaries")
    frames = facts.number_of_frames or 1
    return FrameSource(ds, syntax, frames, verdict.frame_bytes, not encapsulated)


def _number(value: object) -> object:
    """Number of Frames is IS: pydicom gives an IS (an int subclass) or a string."""
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
