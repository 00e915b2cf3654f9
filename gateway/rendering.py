"""Rendered images (PS3.18 8.3.5, 10.4.1.1.3): a frame as JPEG or PNG, windowed and scaled.

Why here: like ``gateway.thumbnails`` (whose windowing this follows), it turns Pixel Data into
pixels, so it goes through ``gateway.frames`` (``check_geometry`` first, each frame bounded).
The parameters are the standard's: ``window=center,width,function`` (linear, linear-exact,
sigmoid; PS3.3 C.11.2.1.2), ``viewport=vw,vh`` (the image scaled to fit, aspect kept; the
source-region form ``vw,vh,sx,sy,sw,sh`` crops first), ``quality=1..100`` (JPEG). Without a
window the instance's own VOI (Window Center/Width) is used, else its value range.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from gateway.errors import ZtbridgeError
from gateway.frames import FrameError, frame_source

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}
MAX_VIEWPORT = 8192


class RenderParamError(ZtbridgeError):
    """A rendering parameter is malformed (400)."""


@dataclass(frozen=True)
class Window:
    """A VOI window: center, width and function."""

    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    """The output size, and optionally the source region to crop first."""

    width: int
    height: int
    region: tuple[int, int, int, int] | None = None  # sx, sy, sw, sh


@dataclass(frozen=True)
class RenderParams:
    """What a rendered request asks for."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90


def parse_params(window: str | None, viewport: str | None, quality: str | None) -> RenderParams:
    """The query parameters as RenderParams; RenderParamError names the bad one."""
    win = None
    if window:
        parts = window.split(",")
        if len(parts) not in (2, 3):
            raise RenderParamError("window is center,width[,function]")
        try:
            center, width = float(parts[0]), float(parts[1])
        except ValueError:
            raise RenderParamError("window center and width must be numbers") from None
        function = parts[2].strip().lower() if len(parts) == 3 else "linear"
        if function not in ("linear", "linear-exact", "sigmoid"):
            raise RenderParamError("window function is linear, linear-exact or sigmoid")
        if not (math.isfinite(center) and math.isfinite(width)) or width <= 0:
            raise RenderParamError("window width must be a positive number")
        if function == "linear" and width < 1:
            raise RenderParamError("a linear window's width must be at least 1")
        win = Window(center, width, function)
    port = None
    if viewport:
        try:
            nums = [int(p) for p in viewport.split(",")]
        except ValueError:
            raise RenderParamError("viewport is vw,vh[,sx,sy,sw,sh] in integers") from None
        if len(nums) not in (2, 6) or not all(0 < n <= MAX_VIEWPORT for n in nums[:2]):
            raise RenderParamError(f"viewport is vw,vh (1..{MAX_VIEWPORT}) [,sx,sy,sw,sh]")
        region = None
        if len(nums) == 6:
            sx, sy, sw, sh = nums[2:]
            if sx < 0 or sy < 0 or sw == 0 or sh == 0:
                raise RenderParamError("viewport's source region is sx,sy >= 0, sw,sh != 0")
            region = (sx, sy, sw, sh)
        port = Viewport(nums[0], nums[1], region)
    q = 90
    if quality:
        try:
            q = int(quality)
        except ValueError:
            raise RenderParamError("quality is an integer 1..100") from None
        if not 1 <= q <= 100:
            raise RenderParamError("quality is an integer 1..100")
    return RenderParams(win, port, q)


def _first(value: Any) -> float:
    """The first value of a (possibly multi-valued) DS."""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return float(value[0])
    return float(value)


def _voi(values: Any, ds: Any, window: Window | None) -> Any:
    """Values mapped to 0..1 by the window (or the instance's VOI, or its range)."""
    import numpy as np

    if window is None:
        wc, ww = ds.get("WindowCenter"), ds.get("WindowWidth")
        if wc is not None and ww is not None:
            try:
                window = Window(_first(wc), _first(ww))
            except (TypeError, ValueError):
                window = None
            if window is not None and window.width < 1:
                window = None
    values = np.asarray(values, dtype=np.float64)
    if window is None:
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "linear-exact":
        return np.clip((values - (c - w / 2)) / w, 0, 1)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1


def render(ds: Any, number: int, media_type: str, params: RenderParams) -> bytes:
    """Frame ``number`` (1-based) of ``ds`` rendered as ``media_type``. FrameError if it
    cannot be decoded (no pixels, bad geometry, no codec), RenderParamError for a bad
    region."""
    import numpy as np
    from PIL import Image
    from pydicom.pixels.processing import apply_modality_lut

    if media_type not in MEDIA_TYPES:
        raise RenderParamError(f"rendered images are {', '.join(MEDIA_TYPES)}")
    source = frame_source(ds)
    frame = source.array(number)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 1:
        values = apply_modality_lut(frame, ds)
        scaled = _voi(values, ds, params.window)
        if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            scaled = 1.0 - scaled
        image = Image.fromarray(np.uint8(np.clip(scaled, 0, 1) * 255 + 0.5), mode="L")
    elif samples == 3:
        from pydicom.pixels.processing import convert_color_space

        photometric = str(ds.get("PhotometricInterpretation", "RGB"))
        rgb = frame
        if photometric.startswith("YBR") and source.native:
            rgb = convert_color_space(frame, photometric, "RGB")
        elif photometric.startswith("YBR"):
            rgb = convert_color_space(frame, "YBR_FULL", "RGB")
        bits = int(ds.get("BitsStored", 8) or 8)
        if bits > 8:
            rgb = np.asarray(rgb, dtype=np.float64) / ((1 << bits) - 1) * 255
        image = Image.fromarray(np.uint8(np.clip(rgb, 0, 255)), mode="RGB")
    else:
        raise FrameError(f"{samples} samples per pixel are not rendered")
    if params.viewport is not None:
        image = _fit(image, params.viewport)
    out = io.BytesIO()
    if MEDIA_TYPES[media_type] == "JPEG":
        image.save(out, format="JPEG", quality=params.quality)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def _fit(image: Any, viewport: Viewport) -> Any:
    from PIL import Image

    if viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        flip_x, flip_y = sw < 0, sh < 0
        box = (sx, sy, min(sx + abs(sw), image.width), min(sy + abs(sh), image.height))
        if box[0] >= box[2] or box[1] >= box[3]:
            raise RenderParamError("viewport's source region is outside the image")
        image = image.crop(box)
        if flip_x:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if flip_y:
            image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / image.width, viewport.height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def placeholder(media_type: str, size: int = 128) -> bytes:
    """A plain grey square: the thumbnail of an image that cannot be decoded."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (size, size), 64).save(out, format=MEDIA_TYPES.get(media_type, "PNG"))
    return out.getvalue()
