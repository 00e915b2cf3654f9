"""Previews: a PNG for a decodable image; None (a placeholder) for anything else, and a
hostile geometry is refused by ``check_geometry`` before any decoder allocates."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest

from gateway.thumbnails import preview_png
from tests.support.dicomgen import make_ct_series


@pytest.fixture
def ct(tmp_path: Path) -> bytes:
    return make_ct_series(tmp_path, 1, rows=40, columns=30).files[0].read_bytes()


def _edited(part10: bytes, **changes: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(part10))
    for name, value in changes.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_a_ct_slice_becomes_a_small_png(ct: bytes) -> None:
    from PIL import Image

    png = preview_png(ct, size=32)
    assert png is not None and png.startswith(b"\x89PNG")
    image = Image.open(io.BytesIO(png))
    assert max(image.size) == 32 and image.mode == "L"


@pytest.mark.parametrize(
    "changes",
    [
        {"Rows": 65535, "Columns": 65535},  # claims ~8 GB of pixels for a few bytes
        {"BitsAllocated": 64},
        {"SamplesPerPixel": 3},
    ],
)
def test_undecodable_is_none(ct: bytes, changes: dict[str, object]) -> None:
    assert preview_png(_edited(ct, **changes)) is None


def test_garbage_is_none() -> None:
    assert preview_png(b"not dicom at all") is None


# -- compressed syntaxes (pylibjpeg + its libjpeg and openjpeg plugins) ---------------------
# Every instance below is generated here from a synthetic slice: JPEG baseline by Pillow,
# JPEG lossless (Process 14 SV1) by DCMTK's dcmcjpeg, JPEG 2000 by pydicom's pylibjpeg
# encoder, RLE by pydicom's own. 64 x 64: OpenJPEG's default six resolution levels need it.


@pytest.fixture
def ct64(tmp_path: Path) -> bytes:
    return make_ct_series(tmp_path / "64", 1, rows=64, columns=64).files[0].read_bytes()


def _gradient(ct: bytes) -> pydicom.Dataset:
    """The slice with a smooth ramp (a preview of it is not uniform: scaling is visible)."""
    import numpy as np

    ds = pydicom.dcmread(io.BytesIO(ct))
    ramp = np.add.outer(np.arange(ds.Rows), np.arange(ds.Columns)) * 30
    ds.PixelData = ramp.astype(np.uint16).tobytes()
    return ds


def _saved(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _jpeg_baseline(ct: bytes) -> bytes:
    import numpy as np
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = _gradient(ct)
    pixels = (ds.pixel_array >> 4).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(jpeg, format="JPEG", quality=90)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return _saved(ds)


def _jpeg_lossless(ct: bytes, tmp_path: Path) -> bytes:
    import shutil
    import subprocess

    if shutil.which("dcmcjpeg") is None:
        pytest.skip("DCMTK's dcmcjpeg is not installed")
    src, dst = tmp_path / "native.dcm", tmp_path / "lossless.dcm"
    src.write_bytes(_saved(_gradient(ct)))
    subprocess.run(["dcmcjpeg", "+e1", str(src), str(dst)], check=True, capture_output=True)
    return dst.read_bytes()


def _compressed(ct: bytes, syntax: str) -> bytes:
    ds = _gradient(ct)
    ds.compress(syntax)
    return _saved(ds)


@pytest.mark.parametrize("kind", ["jpeg-baseline", "jpeg-lossless", "jpeg2000", "rle"])
def test_compressed_instances_get_a_preview(ct64: bytes, tmp_path: Path, kind: str) -> None:
    import numpy as np
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, RLELossless

    made = {
        "jpeg-baseline": lambda: _jpeg_baseline(ct64),
        "jpeg-lossless": lambda: _jpeg_lossless(ct64, tmp_path),
        "jpeg2000": lambda: _compressed(ct64, JPEG2000Lossless),
        "rle": lambda: _compressed(ct64, RLELossless),
    }[kind]()
    expected = {
        "jpeg-baseline": JPEGBaseline8Bit,
        "jpeg-lossless": JPEGLosslessSV1,
        "jpeg2000": JPEG2000Lossless,
        "rle": RLELossless,
    }[kind]
    assert pydicom.dcmread(io.BytesIO(made)).file_meta.TransferSyntaxUID == expected
    png = preview_png(made, size=32)
    assert png is not None, kind
    image = np.asarray(Image.open(io.BytesIO(png)))
    assert max(image.shape) == 32
    assert int(image.max()) - int(image.min()) > 100  # the ramp, not a blank square


def test_a_corrupt_compressed_stream_is_none(ct: bytes) -> None:
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(_jpeg_baseline(ct)))
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20])
    assert preview_png(_saved(ds)) is None


def test_a_syntax_no_plugin_decodes_is_none(ct: bytes) -> None:
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(io.BytesIO(_jpeg_baseline(ct)))
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile
    assert preview_png(_saved(ds)) is None
