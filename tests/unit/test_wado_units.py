"""WADO-RS building blocks without a server: Accept parsing and negotiation (PS3.18 8.7),
frames of compressed instances in their own media type, transcoding limits, rendering
parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from gateway.frames import FrameError, frame_source, read_dataset
from gateway.rendering import RenderParamError, parse_params
from gateway.transcode import can_transcode
from portal.dicomweb.accept import AcceptError, Offer, negotiate, parse_accept

DICOM = Offer("multipart/related", "application/dicom")
ZIP = Offer("application/zip")


def test_accept_q_values_order_and_parameters() -> None:
    ranges = parse_accept(
        'application/zip;q=0.5, multipart/related; type="application/dicom";'
        " transfer-syntax=1.2.840.10008.1.2, text/html;q=0"
    )
    assert [r.media_type for r in ranges] == ["multipart/related", "application/zip"]
    assert ranges[0].part_type == "application/dicom"
    assert ranges[0].transfer_syntax == "1.2.840.10008.1.2"
    choice = negotiate(ranges, [DICOM, ZIP])
    assert choice is not None and choice.offer == DICOM
    assert choice.transfer_syntax == "1.2.840.10008.1.2"
    zip_first = negotiate(parse_accept("application/zip, multipart/related"), [DICOM, ZIP])
    assert zip_first is not None and zip_first.offer == ZIP


@pytest.mark.parametrize("header", [None, "", "*/*", "multipart/*", "application/dicom"])
def test_accept_defaults_to_multipart_dicom(header: str | None) -> None:
    choice = negotiate(parse_accept(header), [DICOM, ZIP])
    assert choice is not None and choice.offer == DICOM and choice.transfer_syntax is None


@pytest.mark.parametrize("header", ["text/html", "image/jpeg", "application/dicom;q=0"])
def test_accept_nothing_acceptable(header: str) -> None:
    assert negotiate(parse_accept(header), [DICOM, ZIP]) is None


@pytest.mark.parametrize("header", ["nonsense", "a/b; q=x", "a/b; q=2", 'a/b; type="x'])
def test_accept_malformed(header: str) -> None:
    with pytest.raises(AcceptError):
        parse_accept(header)


def test_compressed_frames_in_their_own_media_type() -> None:
    ds = read_dataset(Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes())
    source = frame_source(ds)
    assert not source.native and source.stored_media_type() == "image/jpeg"
    frame = source.stored(1)
    assert frame.startswith(b"\xff\xd8") and frame.rstrip(b"\0").endswith(b"\xff\xd9")
    with pytest.raises(FrameError) as e:
        source.stored(2)
    assert e.value.missing


def test_native_frames_cut_by_offset() -> None:
    ds = read_dataset(Path(get_testdata_file("MR_small.dcm")).read_bytes())
    source = frame_source(ds)
    assert source.native and source.stored(1) == bytes(ds.PixelData[: source.frame_bytes])


def test_transcoding_limits() -> None:
    explicit, implicit = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
    assert can_transcode(explicit, implicit) and can_transcode(implicit, "1.2.840.10008.1.2.1.99")
    assert can_transcode(explicit, "1.2.840.10008.1.2.5")  # RLE: pydicom's own encoder
    assert not can_transcode(explicit, "1.2.840.10008.1.2.4.50")  # lossy: never
    assert not can_transcode("1.2.840.10008.1.2.2", explicit)  # big endian: not re-ordered


@pytest.mark.parametrize(
    ("window", "viewport", "quality"),
    [("1", None, None), ("a,b", None, None), ("40,0", None, None), ("40,400,cubic", None, None),
     (None, "0,10", None), (None, "10", None), (None, None, "101"), (None, None, "x")],
)  # fmt: skip
def test_render_params_refused(
    window: str | None, viewport: str | None, quality: str | None
) -> None:
    with pytest.raises(RenderParamError):
        parse_params(window, viewport, quality)


def test_render_params_parsed() -> None:
    p = parse_params("40,400,sigmoid", "256,128,0,0,64,64", "75")
    assert p.window is not None and p.window.function == "sigmoid" and p.window.width == 400
    assert p.viewport is not None and p.viewport.region == (0, 0, 64, 64) and p.quality == 75
