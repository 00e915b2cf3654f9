"""Synthetic DICOM for tests and benchmarks: no real patient data ever enters the repository.

Every generator writes Part-10 files with fresh UIDs, so separate runs never collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    generate_uid,
)

# Transfer syntaxes covered by pydicom's bundled (offline) test files.
COMPRESSED_TESTDATA = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline 1.2.840.10008.1.2.4.50
    "JPEG-lossy.dcm",  # JPEG Extended 1.2.840.10008.1.2.4.51
    "JPGExtended.dcm",  # JPEG Extended 1.2.840.10008.1.2.4.51
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1 1.2.840.10008.1.2.4.70
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless 1.2.840.10008.1.2.4.80
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near lossless .81
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless .90
    "JPEG2000.dcm",  # JPEG 2000 .91
    "MR_small_RLE.dcm",  # RLE lossless 1.2.840.10008.1.2.5
    "image_dfl.dcm",  # Deflated explicit VR LE 1.2.840.10008.1.2.1.99
    "MR_small_bigendian.dcm",  # Explicit VR big endian 1.2.840.10008.1.2.2
    "MR_small_implicit.dcm",  # Implicit VR LE 1.2.840.10008.1.2
]


@dataclass(frozen=True)
class Series:
    """What a generator wrote: the files and the identifiers tests assert on."""

    files: list[Path]
    patient_id: str
    study_uid: str
    series_uid: str


def _base_dataset(
    sop_class: str, patient_id: str, study_uid: str, series_uid: str, number: int
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.PatientName = "TEST^SYNTHETIC"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20260101"
    ds.StudyTime = "120000"
    ds.AccessionNumber = "ACC" + patient_id[-6:]
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.Manufacturer = "ztbridge-tests"
    ds.ReferringPhysicianName = ""
    return ds


def _save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def make_ct_series(
    out_dir: Path,
    count: int,
    *,
    rows: int = 512,
    columns: int = 512,
    patient_id: str | None = None,
    study_uid: str | None = None,
    seed: int = 0,
) -> Series:
    """Write ``count`` 16-bit CT slices (Explicit VR LE), one series, one study."""
    rng = np.random.default_rng(seed)
    patient_id = patient_id or f"PAT{rng.integers(10**9):09d}"
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    base = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16)
    files = []
    for i in range(count):
        ds = _base_dataset(CTImageStorage, patient_id, study_uid, series_uid, i + 1)
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = "1.0"
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.5, 0.5]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = np.roll(base, i, axis=0).tobytes()
        files.append(_save(ds, out_dir / f"ct_{i:05d}.dcm"))
    return Series(files, patient_id, study_uid, series_uid)


def make_multiframe(
    out_dir: Path, frames: int = 30, rows: int = 256, columns: int = 256, seed: int = 1
) -> Series:
    """Write one multi-frame true-colour secondary capture instance."""
    rng = np.random.default_rng(seed)
    patient_id = f"PAT{rng.integers(10**9):09d}"
    study_uid, series_uid = generate_uid(), generate_uid()
    ds = _base_dataset(
        MultiFrameTrueColorSecondaryCaptureImageStorage, patient_id, study_uid, series_uid, 1
    )
    ds.Modality = "OT"
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 255, size=(frames, rows, columns, 3), dtype=np.uint8).tobytes()
    path = _save(ds, out_dir / "multiframe.dcm")
    return Series([path], patient_id, study_uid, series_uid)


def compressed_testdata() -> list[Path]:
    """pydicom's bundled files in compressed and unusual transfer syntaxes (offline copies)."""
    paths = []
    for name in COMPRESSED_TESTDATA:
        found = get_testdata_file(name, download=False)
        if found is None:
            raise FileNotFoundError(f"pydicom test file {name} is not bundled")
        paths.append(Path(str(found)))
    return paths


# storescu (DCMTK 3.6) proposes a compressed transfer syntax only when asked with its option.
STORESCU_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
}


def make_compressed(out_dir: Path) -> Series:
    """pydicom's bundled compressed files, re-identified into one fresh synthetic study.

    The bundled files share UIDs between variants and some lack a Patient ID; here each gets
    new UIDs and a patient while its pixel data and transfer syntax stay exactly as bundled.
    """
    from pydicom import dcmread

    patient_id = "PATCOMP" + generate_uid()[-8:]
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for i, path in enumerate(compressed_testdata()):
        ds = dcmread(path)
        ds.PatientID = patient_id
        ds.PatientName = "TEST^COMPRESSED"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        out = out_dir / f"compressed_{i:02d}.dcm"
        out.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(out, enforce_file_format=True)
        files.append(out)
    return Series(files, patient_id, study_uid, series_uid)


def make_large_study(out_dir: Path, total_bytes: int, seed: int = 2) -> Series:
    """A study of 512x512 16-bit CT slices adding up to about ``total_bytes``."""
    per_slice = 512 * 512 * 2
    return make_ct_series(out_dir, max(1, total_bytes // per_slice), seed=seed)
