"""Strict structural scan and required identifiers: tables of good and bad data sets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset

from gateway.dataset import inflate, scan, split_part10
from gateway.errors import DatasetRefusedError
from gateway.validation import is_valid_uid, required_identifiers
from tests.support.dicomgen import compressed_testdata, make_ct_series, make_multiframe


@pytest.mark.parametrize(
    ("uid", "ok"),
    [
        ("1.2.840.10008.1.2", True),
        ("0", True),
        ("1.02.3", False),
        ("1..2", False),
        ("1.2.", False),
        ("", False),
        ("1." + "1" * 63, False),
        ("1.2.a", False),
        ("../etc/passwd", False),
    ],
)
def test_uid_syntax(uid: str, ok: bool) -> None:
    assert is_valid_uid(uid) is ok


def _ds(**kw: str) -> dict[str, str]:
    ds = {
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "SOPInstanceUID": "1.2.3.4",
        "StudyInstanceUID": "1.2.3",
        "SeriesInstanceUID": "1.2.3.5",
        "PatientID": "P1",
    }
    for k, v in kw.items():
        if v == "<del>":
            del ds[k]
        else:
            ds[k] = v
    return ds


@pytest.mark.parametrize(
    ("case", "ds", "declared", "fragment"),
    [
        ("no SOP instance", _ds(SOPInstanceUID="<del>"), (None, None), "SOPInstanceUID is missing"),
        ("no study", _ds(StudyInstanceUID="<del>"), (None, None), "StudyInstanceUID"),
        ("no series", _ds(SeriesInstanceUID="<del>"), (None, None), "SeriesInstanceUID"),
        ("bad UID", _ds(StudyInstanceUID="1.2.03"), (None, None), "not a valid UID"),
        ("class mismatch", _ds(), ("1.2.840.10008.5.1.4.1.1.4", None), "differs"),
        ("instance mismatch", _ds(), (None, "1.2.3.9"), "differs"),
    ],
)
def test_required_identifiers_refused(
    case: str, ds: dict[str, str], declared: tuple[str | None, str | None], fragment: str
) -> None:
    with pytest.raises(DatasetRefusedError) as info:
        required_identifiers(ds, *declared)
    assert info.value.status == 0xA900, case
    assert fragment in info.value.reason, case


@pytest.mark.parametrize("ds", [_ds(PatientID=""), _ds(PatientID="<del>")], ids=["empty", "no"])
def test_empty_patient_id_is_type_2(ds: dict[str, str]) -> None:
    """Accepted as "" by default (stored, flagged); refused only when the setting asks."""
    assert required_identifiers(ds, None, None)["PatientID"] == ""
    with pytest.raises(DatasetRefusedError) as info:
        required_identifiers(ds, None, None, require_patient_id=True)
    assert info.value.status == 0xA900
    assert "PatientID" in info.value.reason


def test_required_identifiers_ok() -> None:
    ids = required_identifiers(_ds(), "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")
    assert ids["PatientID"] == "P1"


def test_scan_accepts_generated_and_bundled(tmp_path: Path) -> None:
    files = [
        *make_ct_series(tmp_path, 2).files,
        *make_multiframe(tmp_path, frames=2).files,
        *compressed_testdata(),
    ]
    for f in files:
        part = split_part10(f.read_bytes())
        data = part.dataset
        if part.transfer_syntax.endswith(".99"):
            data = inflate(data, 1 << 30)
        s = scan(data, part.transfer_syntax)
        assert s.elements > 5, f


def _ct_dataset(tmp_path: Path) -> bytes:
    return split_part10(make_ct_series(tmp_path, 1).files[0].read_bytes()).dataset


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("cut in header", lambda d: d[:100]),
        ("cut in pixel data", lambda d: d[:-1]),
        ("trailing garbage", lambda d: d + b"\x01\x02\x03"),
        ("empty", lambda d: b""),
        ("garbage", lambda d: b"\xff" * 300),
        ("element out of order", lambda d: d[: len(d) // 2] + d[:64]),
    ],
)
def test_scan_refuses_corrupt(tmp_path: Path, case: str, mutate: object) -> None:
    data = mutate(_ct_dataset(tmp_path))  # type: ignore[operator]
    with pytest.raises(DatasetRefusedError) as info:
        scan(data, "1.2.840.10008.1.2.1")
    assert info.value.status == 0xC000, case


def test_scan_refuses_truncated_bundled_files() -> None:
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        path = get_testdata_file(name, download=False)
        assert path is not None
        part = split_part10(Path(str(path)).read_bytes())
        with pytest.raises(DatasetRefusedError):
            scan(part.dataset, part.transfer_syntax)


def test_scan_sequences_implicit() -> None:
    inner = Dataset()
    inner.CodeValue = "1"
    ds = Dataset()
    for k, v in _ds().items():
        setattr(ds, k, v)
    ds.ReferencedStudySequence = [inner, inner]
    from pydicom.filebase import DicomBytesIO

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    assert scan(buf.getvalue(), "1.2.840.10008.1.2").elements == 8  # 6 top-level + 2 nested


def test_split_refuses_non_dicom() -> None:
    with pytest.raises(DatasetRefusedError):
        split_part10(b"hello world" * 20)


def test_inflate_bomb_refused() -> None:
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = c.compress(b"\0" * (10 << 20)) + c.flush()
    with pytest.raises(DatasetRefusedError) as info:
        inflate(bomb, 1 << 20)
    assert info.value.status == 0xA700


def test_indexed_metadata_matches_pydicom(tmp_path: Path) -> None:
    """Our fast reader gives the same DICOM JSON as pydicom for every attribute it indexes."""
    from pydicom import dcmread

    from gateway.metadata import WANTED, read_indexed

    files = [*make_ct_series(tmp_path, 1).files, *compressed_testdata()]
    checked = 0
    for f in files:
        part = split_part10(f.read_bytes())
        data = part.dataset
        if part.transfer_syntax.endswith(".99"):
            data = inflate(data, 1 << 30)
        doc = read_indexed(data, scan(data, part.transfer_syntax, WANTED))
        reference = dcmread(f).to_json_dict()
        for tag, entry in doc.items():
            assert reference.get(tag) == entry, (f.name, tag)
            checked += 1
    assert checked > 100


def test_implicit_values_that_look_like_items_are_not_sequences() -> None:
    """Pixel data or a private OB value starting with the item tag is opaque, not refused."""
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO

    ds = Dataset()
    for k, v in _ds().items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns, ds.BitsAllocated = 2, 8, 8
    ds.PixelData = b"\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x01" * 8
    ds[0x00091010] = DataElement(0x00091010, "OB", b"\xfe\xff\x00\xe0\xff\x00\x00\x00" + bytes(8))
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    result = scan(buf.getvalue(), "1.2.840.10008.1.2")
    assert result.pixel_length == 16
