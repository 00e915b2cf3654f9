"""``gateway.deflated.inflate_checked``: the header it keeps, what it refuses, the memory it
takes; and ``dataset.refuse_file_meta`` for group 0002 inside a data set."""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.dataset import inflate, refuse_file_meta, scan, split_part10
from gateway.deflated import RATIO_FLOOR, InflateLimits, inflate_checked
from gateway.errors import DatasetRefusedError
from gateway.header import header_parts
from tests.hostile.harness import (
    ct,
    deflate_bomb,
    encode,
    meta_in_dataset,
    pixel_element,
    write_part10,
)
from tests.support.dicomgen import compressed_testdata, make_ct_series, make_multiframe

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
LIMITS = InflateLimits()


def deflate(data: bytes, level: int = 6) -> bytes:
    c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = c.compress(data) + c.flush()
    return out + b"\0" * (len(out) % 2)


def rich() -> bytes:
    """Explicit VR LE with an undefined-length sequence, a large bulk element before the cut
    (an overlay), Pixel Data and a trailing element after it."""
    ds = ct()
    item = Dataset()
    item.CodeValue = "1"
    item.CodingSchemeDesignator = "DCM"
    ds.ProcedureCodeSequence = Sequence([item, item])
    ds.add_new(0x60003000, "OW", b"\x01\x00" * 40000)  # 80 KB: bulk, left out of the header
    ds.PixelData = b"\x05\x00" * (16 * 16)
    ds.add_new(0xFFFCFFFC, "OB", b"\0" * 8)  # Data Set Trailing Padding, after the cut
    return encode(ds)


def explicit_samples(tmp_path: Path) -> list[bytes]:
    """Explicit VR LE data sets: generated, bundled (re-encoded only if deflated), rich."""
    out = [rich()]
    for f in [*make_ct_series(tmp_path, 1).files, *make_multiframe(tmp_path, frames=2).files]:
        out.append(split_part10(f.read_bytes()).dataset)
    for f in compressed_testdata():
        part = split_part10(f.read_bytes())
        if part.transfer_syntax == EXPLICIT_LE or part.transfer_syntax.startswith(
            "1.2.840.10008.1.2.4"
        ):
            out.append(part.dataset)
        elif part.transfer_syntax == DEFLATED:
            out.append(inflate(part.dataset, 1 << 30))
    return out


def test_the_header_kept_is_the_header_of_the_whole_inflated_data_set(tmp_path: Path) -> None:
    for plain in explicit_samples(tmp_path):
        whole = scan(plain, EXPLICIT_LE)
        got = inflate_checked(deflate(plain), LIMITS)
        assert got.header == b"".join(header_parts(plain, whole))
        assert got.inflated_size == len(plain)
        expected_pixels = whole.pixel_length if whole.pixel_offset < len(plain) else None
        assert got.pixel_length == expected_pixels
        assert got.pixel_fragments == whole.pixel_fragments


def test_the_bundled_deflated_file_as_sent() -> None:
    f = next(p for p in compressed_testdata() if p.name == "image_dfl.dcm")
    part = split_part10(f.read_bytes())
    plain = inflate(part.dataset, 1 << 30)
    got = inflate_checked(part.dataset, LIMITS)
    assert got.header == b"".join(header_parts(plain, scan(plain, DEFLATED)))


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("cut in header", lambda d: d[:100]),
        ("cut in pixel data", lambda d: d[:-1]),
        ("trailing garbage", lambda d: d + b"\x01\x02\x03"),
        ("garbage", lambda d: b"\xff" * 300),
        ("element out of order", lambda d: d[: len(d) // 2] + d[:64]),
        ("item at the top level", lambda d: d + b"\xfe\xff\x00\xe0\x00\x00\x00\x00"),
        ("bad sequence", lambda d: d.replace(b"\xfe\xff\x00\xe0", b"\xfe\xff\x00\xe1", 1)),
    ],
)
def test_corrupt_inflated_content_is_refused(case: str, mutate: object) -> None:
    data = mutate(rich())  # type: ignore[operator]
    with pytest.raises(DatasetRefusedError) as info:
        got = inflate_checked(deflate(data), LIMITS)
        scan(got.header, DEFLATED)  # ingest scans the header it keeps
    assert info.value.status == 0xC000, case


@pytest.mark.parametrize(
    ("case", "stream", "says"),
    [
        ("not deflate", b"\xff" * 64, "does not inflate"),
        ("deflate stream cut short", deflate(rich())[:-40], "truncated"),
        ("empty", b"", "empty"),
    ],
)
def test_a_broken_deflate_stream_is_refused(case: str, stream: bytes, says: str) -> None:
    with pytest.raises(DatasetRefusedError) as info:
        inflate_checked(stream, LIMITS)
    assert (info.value.status, says in info.value.reason) == (0xC000, True), info.value.reason


def test_the_ratio_limit_refuses_a_bomb_while_inflating() -> None:
    bomb = deflate_bomb(512 << 20)
    with pytest.raises(DatasetRefusedError) as info:
        inflate_checked(bomb.data, LIMITS)
    assert info.value.status == 0xA700
    assert "ingest.max_inflate_ratio" in info.value.reason


def test_the_ratio_spares_the_first_64_mib() -> None:
    small = ct()
    small.PixelData = b"\0" * (32 << 20)  # 32 MiB of zeros in ~32 KB: 1000:1, under the floor
    data = encode(small)
    assert inflate_checked(deflate(data, 9), LIMITS).inflated_size == len(data) < RATIO_FLOOR


def test_the_size_limit_refuses() -> None:
    bomb = deflate_bomb(300 << 20)
    limits = InflateLimits(max_inflated_bytes=256 << 20, max_ratio=2000)
    with pytest.raises(DatasetRefusedError) as info:
        inflate_checked(bomb.data, limits)
    assert (info.value.status, "ingest.max_inflated_mb" in info.value.reason) == (0xA700, True)


def test_a_header_past_its_limit_is_refused() -> None:
    ds = ct()
    ds.add_new(0x00091010, "UT", "x" * (2 << 20))  # text: kept in the header, not bulk
    with pytest.raises(DatasetRefusedError) as info:
        inflate_checked(deflate(encode(ds)), InflateLimits(max_header_bytes=1 << 20))
    assert info.value.status == 0xA700


def test_memory_stays_bounded_while_a_bomb_inflates_whole() -> None:
    bomb = deflate_bomb(1 << 30)
    limits = InflateLimits(max_inflated_bytes=2 << 30, max_ratio=2000)
    tracemalloc.start()
    try:
        got = inflate_checked(bomb.data, limits)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (got.pixel_length, got.inflated_size > 1 << 30) == (1 << 30, True)
    assert peak < 8 << 20, peak  # a chunk and a copy of the input's tail, not 1 GiB


def test_group_0002_in_a_data_set_is_refused() -> None:
    hostile = meta_in_dataset().data
    scan(hostile, EXPLICIT_LE)  # well formed: structure alone does not catch it
    with pytest.raises(DatasetRefusedError) as info:
        refuse_file_meta(hostile, EXPLICIT_LE)
    assert info.value.status == 0xC000
    assert "group 0002" in info.value.reason
    with pytest.raises(DatasetRefusedError):
        inflate_checked(deflate(hostile), LIMITS)
    group0 = b"\x00\x00\x02\x01UI\x04\x001.2\x00" + hostile  # a command element first
    with pytest.raises(DatasetRefusedError):
        refuse_file_meta(group0, EXPLICIT_LE)


def test_a_data_set_without_group_0002_passes(tmp_path: Path) -> None:
    for f in [*make_ct_series(tmp_path, 1).files, *compressed_testdata()]:
        part = split_part10(f.read_bytes())
        if part.transfer_syntax != DEFLATED:
            refuse_file_meta(part.dataset, part.transfer_syntax)
    refuse_file_meta(b"\x00\x00\x02\x01UI\x04\x001.2\x00" + encode(ct()), EXPLICIT_LE)
    refuse_file_meta(pixel_element(0), EXPLICIT_LE)


def test_a_part10_file_whose_data_set_holds_group_0002_is_refused(tmp_path: Path) -> None:
    # ``ztbridge import``: pydicom would read the data set's group 0002 as the file's own.
    item = meta_in_dataset()
    content = write_part10(item, tmp_path / "x.dcm").read_bytes()
    with pytest.raises(DatasetRefusedError) as info:
        split_part10(content)
    assert (info.value.status, "group 0002" in info.value.reason) == (0xC000, True)
