"""A small PNG preview of one instance, decoded only when its geometry has been checked.

Why here: turning Pixel Data into pixels is the most dangerous thing done to received data
(a decoder trusts Rows x Columns x frames before it looks at the bytes), so the one rule of
``gateway.pixels`` is applied first: ``check_geometry`` on the instance's own header, and
nothing is decoded unless ``decodable``. Native Pixel Data is decoded by pydicom; the
compressed syntaxes by the codec plugins pydicom finds installed (pylibjpeg with its
libjpeg plugin for JPEG baseline, extended and lossless, its openjpeg plugin for JPEG 2000;
RLE by pydicom itself). Only the first frame is decoded, and its shape must be the one the
header claims. A syntax no installed plugin decodes, or anything that fails, is ``None``
and the caller shows a placeholder, never an error.

The first frame is windowed with the instance's own VOI (Window Center/Width, else its
min..max), scaled to fit ``size`` and encoded by Pillow.
"""

from __future__ import annotations

import io
import logging

from gateway.pixels import PixelFacts, check_geometry

log = logging.getLogger("ztbridge.thumbnails")

#: Instances larger than this are not read for a preview (the whole instance is decoded).
MAX_PREVIEW_BYTES = 64 << 20
NATIVE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"})


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decodable_syntax(syntax: str) -> bool:
    """Whether pydicom, with the plugins installed here, decodes this transfer syntax."""
    if syntax in NATIVE:
        return True
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    try:
        return bool(get_decoder(UID(syntax)).is_available)
    except NotImplementedError:  # a syntax pydicom has no decoder for at all
        return False


def preview_png(part10: bytes, size: int = 128) -> bytes | None:
    """The instance's first frame as a PNG at most ``size`` pixels a side; None if it has
    no decodable pixels (the caller shows a placeholder)."""
    try:
        return _render(part10, size)
    except Exception as e:  # a preview never fails a page: say why in the log, show none
        log.info("no preview: %s", type(e).__name__)
        return None


def _render(part10: bytes, size: int) -> bytes | None:
    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.encaps import parse_fragments
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
    from pydicom.pixels.utils import pixel_array

    ds = pydicom.dcmread(io.BytesIO(part10))
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if "PixelData" not in ds or not decodable_syntax(syntax):
        return None
    native = syntax in NATIVE
    facts = PixelFacts(
        rows=_int(ds.get("Rows")),
        columns=_int(ds.get("Columns")),
        samples_per_pixel=_int(ds.get("SamplesPerPixel")),
        bits_allocated=_int(ds.get("BitsAllocated")),
        number_of_frames=_int(ds.get("NumberOfFrames")),
        pixel_length=len(ds.PixelData) if native else -1,
        fragments=0 if native else parse_fragments(ds.PixelData)[0],  # the offset table too
        transfer_syntax=syntax,
    )
    if not check_geometry(facts).decodable or facts.samples_per_pixel != 1:
        return None
    frame = pixel_array(ds, index=0)  # the first frame only, whatever the number of frames
    if frame.shape != (facts.rows, facts.columns):
        log.info("no preview: the decoded frame is %s, not the header's geometry", frame.shape)
        return None
    values = apply_modality_lut(frame, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds)
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    image = Image.fromarray(np.uint8(np.clip(scaled, 0, 1) * 255), mode="L")
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
