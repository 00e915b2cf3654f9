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
