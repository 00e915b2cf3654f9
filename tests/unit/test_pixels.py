"""``gateway.pixels.check_geometry``: a table of geometries against Pixel Data lengths."""

from __future__ import annotations

import pytest

from gateway.pixels import MAX_FRAME_BYTES, PixelFacts, Verdict, check_geometry, facts_from_doc

CT = {"rows": 512, "columns": 512, "samples_per_pixel": 1, "bits_allocated": 16}
HEVC = "1.2.840.10008.1.2.4.107"
JPEG = "1.2.840.10008.1.2.4.50"


def facts(pixel_length: int | None, frames: int | None = None, **change: object) -> PixelFacts:
    values: dict[str, object] = {**CT, "number_of_frames": frames, **change}
    return PixelFacts(pixel_length=pixel_length, **values)  # type: ignore[arg-type]


CASES = [
    ("no pixel data", facts(None), Verdict.NO_PIXELS, None),
    ("exact", facts(512 * 512 * 2), Verdict.CONSISTENT, None),
    ("3 frames", facts(512 * 512 * 2 * 3, 3), Verdict.CONSISTENT, None),
    (
        "RGB 8 bit",
        facts(512 * 512 * 3, samples_per_pixel=3, bits_allocated=8),
        Verdict.CONSISTENT,
        None,
    ),
    ("odd length padded", facts(4, rows=1, columns=3, bits_allocated=8), Verdict.CONSISTENT, None),
    ("1 bit packed", facts(2, rows=3, columns=3, bits_allocated=1), Verdict.CONSISTENT, None),
    ("1 bit, 2 frames", facts(4, 2, rows=3, columns=3, bits_allocated=1), Verdict.CONSISTENT, None),
    ("one byte short", facts(512 * 512 * 2 - 2), Verdict.SHORT, "short"),
    ("frames past the bytes", facts(512 * 512 * 2, 2), Verdict.SHORT, "short"),
    ("excess", facts(512 * 512 * 2 + 64), Verdict.EXCESS, "excess"),
    (
        "the issue's case",
        facts(16, 2**31 - 1, rows=65535, columns=65535, samples_per_pixel=3, bits_allocated=65535),
        Verdict.INVALID,
        "invalid",
    ),
    (
        "huge but valid attributes",
        facts(16, 2**31 - 1, rows=65535, columns=65535),
        Verdict.INVALID,
        "invalid",
    ),
    (
        "frames of 65535 x 65535 x 16 bit, native",
        facts(16, 2, rows=65535, columns=4),
        Verdict.SHORT,
        "short",
    ),
    ("rows missing", facts(16, rows=None), Verdict.INVALID, "invalid"),
    ("rows zero", facts(0, rows=0), Verdict.INVALID, "invalid"),
    ("samples missing", facts(16, samples_per_pixel=None), Verdict.INVALID, "invalid"),
    ("bits 12", facts(16, bits_allocated=12), Verdict.INVALID, "invalid"),
    ("bits 0", facts(16, bits_allocated=0), Verdict.INVALID, "invalid"),
    ("frames 0", facts(512 * 512 * 2, 0), Verdict.INVALID, "invalid"),
    ("frames negative", facts(512 * 512 * 2, -1), Verdict.INVALID, "invalid"),
    (
        "encapsulated, 1 frame in 1 fragment",
        facts(-1, fragments=2, transfer_syntax=JPEG),
        Verdict.ENCAPSULATED,
        None,
    ),
    (
        "encapsulated, no fragment",
        facts(-1, fragments=1, transfer_syntax=JPEG),
        Verdict.INVALID,
        "invalid",
    ),
    (
        "encapsulated, 2^31-1 frames",
        facts(-1, 2**31 - 1, fragments=3, transfer_syntax=JPEG),
        Verdict.INVALID,
        "invalid",
    ),
    (
        "video, many frames in few fragments",
        facts(-1, 900, fragments=3, transfer_syntax=HEVC),
        Verdict.ENCAPSULATED,
        None,
    ),
    (
        "encapsulated, a frame past the cap",
        facts(-1, rows=65535, columns=65535, bits_allocated=64, fragments=2, transfer_syntax=JPEG),
        Verdict.INVALID,
        "invalid",
    ),
]


@pytest.mark.parametrize(("case", "given", "verdict", "flag"), CASES, ids=[c[0] for c in CASES])
def test_geometry_table(case: str, given: PixelFacts, verdict: Verdict, flag: str | None) -> None:
    result = check_geometry(given)
    assert (result.verdict, result.flag) == (verdict, flag), result.reason
    assert result.decodable == (
        verdict in (Verdict.CONSISTENT, Verdict.ENCAPSULATED, Verdict.EXCESS)
    )
    if result.decodable and result.verdict is not Verdict.NO_PIXELS:
        assert result.frame_bytes is not None and 0 < result.frame_bytes <= MAX_FRAME_BYTES


def test_what_a_decoder_may_allocate() -> None:
    result = check_geometry(facts(512 * 512 * 2 * 3, 3))
    assert (result.frame_bytes, result.expected_bytes) == (512 * 512 * 2, 512 * 512 * 2 * 3)


def test_facts_from_the_index_document() -> None:
    doc = {
        "00280002": {"vr": "US", "Value": [3]},
        "00280008": {"vr": "IS", "Value": [2]},
        "00280010": {"vr": "US", "Value": [4]},
        "00280011": {"vr": "US", "Value": [5]},
        "00280100": {"vr": "US", "Value": [8]},
    }
    got = facts_from_doc(doc, 120, 0, "1.2.840.10008.1.2.1")
    assert got == PixelFacts(4, 5, 3, 8, 2, 120, 0, "1.2.840.10008.1.2.1")
    assert check_geometry(got).verdict is Verdict.CONSISTENT
    assert facts_from_doc({"00280010": {"vr": "US"}}, None).rows is None  # empty value
