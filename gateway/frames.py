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
from typing import Any, Protocol

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


class Frames(Protocol):
    """What frame retrieval needs of an instance's pixels (FrameSource, RangedFrames)."""

    @property
    def native(self) -> bool:
        """Whether frames are native pixels (cut by offset)."""
        ...

    @property
    def transfer_syntax(self) -> str:
        """The stored transfer syntax."""
        ...

    @property
    def frames(self) -> int:
        """How many frames."""
        ...

    def stored_media_type(self) -> str:
        """The media type of a frame as stored."""
        ...

    def stored(self, number: int) -> bytes:
        """Frame ``number`` (1-based) as stored."""
        ...

    def native_little_endian(self, number: int) -> bytes:
        """Frame ``number`` as native little-endian pixels."""
        ...


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
    if syntax == DEFLATED_LE:
        syntax = EXPLICIT_LE  # pydicom inflated it: the pixels are Explicit VR LE's
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


_PIXEL_TAG = b"\xe0\x7f\x10\x00"
_UNDEFINED = 0xFFFFFFFF


class RangedFrames:
    """Native frames read by byte range out of the instance object (the fast path).

    ``header`` is the instance's header object (``retrieve_header``): its data set is the
    instance's own bytes up to the Pixel Data element when ingest cut nothing before it, so
    the element should start right after it. ``read(a, b)`` gives the instance's plaintext
    bytes ``a``..``b`` (``gateway.retrieve.retrieve_range``: only the segments they span are
    decrypted). ``locate`` probes that spot and checks the element header is Pixel Data with
    a defined length; None means "read the instance whole instead" (an element was cut
    before the pixels, another syntax, encapsulated data). Geometry goes through
    ``check_geometry`` with the length found, as for every decoder.
    """

    native = True

    def __init__(
        self, ds: Any, syntax: str, value_at: int, frames: int, frame_bytes: int, read: Any
    ) -> None:
        self.ds = ds
        self.transfer_syntax = syntax
        self.frames = frames
        self.frame_bytes = frame_bytes
        self._at = value_at
        self._read = read

    @classmethod
    def locate(cls, header: bytes, read: Any) -> RangedFrames | None:
        """The ranged frames of the instance whose header object is ``header``, or None."""
        ds = read_dataset(header)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        if syntax not in ("1.2.840.10008.1.2", EXPLICIT_LE) or "Rows" not in ds:
            return None
        at = len(header)
        probe = read(at, at + 12)
        if len(probe) < 8 or probe[:4] != _PIXEL_TAG:
            return None
        if syntax == EXPLICIT_LE:
            if len(probe) < 12 or probe[4:6] not in (b"OW", b"OB") or probe[6:8] != b"\0\0":
                return None
            length, value_at = int.from_bytes(probe[8:12], "little"), at + 12
        else:
            length, value_at = int.from_bytes(probe[4:8], "little"), at + 8
        if length == _UNDEFINED:
            return None
        facts = PixelFacts(
            rows=_int(ds.get("Rows")),
            columns=_int(ds.get("Columns")),
            samples_per_pixel=_int(ds.get("SamplesPerPixel")),
            bits_allocated=_int(ds.get("BitsAllocated")),
            number_of_frames=_int(_number(ds.get("NumberOfFrames"))),
            pixel_length=length,
            transfer_syntax=syntax,
        )
        verdict = check_geometry(facts)
        if not verdict.decodable or verdict.frame_bytes is None or facts.bits_allocated == 1:
            return None
        return cls(ds, syntax, value_at, facts.number_of_frames or 1, verdict.frame_bytes, read)

    def stored_media_type(self) -> str:
        """Native frames are octets."""
        return "application/octet-stream"

    def stored(self, number: int) -> bytes:
        """Frame ``number`` (1-based), read by range."""
        if not 1 <= number <= self.frames:
            raise FrameError(f"frame {number} is not in 1..{self.frames}", missing=True)
        start = self._at + (number - 1) * self.frame_bytes
        data: bytes = self._read(start, start + self.frame_bytes)
        if len(data) != self.frame_bytes:
            raise FrameError(f"frame {number} is shorter than its geometry")
        return data

    def native_little_endian(self, number: int) -> bytes:
        """Little-endian syntaxes only reach here: as stored."""
        return self.stored(number)
