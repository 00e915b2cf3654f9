"""The DICOMweb test world's data: who exists, which studies, what each study holds.

Synthetic DICOM (no real patient data), written once per session and pushed with the same
``storescu`` to ztbridge and to Orthanc, so both servers hold byte-identical instances.

Who sees what (``WrittenStudy.seen_by``): ann (patient) her own four studies; drlee (doctor)
the five ann, cyd and dai share with him; bob (patient) only his own; nobody sees the
unlinked study (the custodian's). dai's name is in ISO 2022 IR 87 (Japanese ideographic and
phonetic groups) and his study has no AccessionNumber. PatientNames carry carets, spaces and
UTF-8; one study has no StudyDate (open date ranges must not match it); dates are shared
across patients so that a leaking date or name query would show someone else's study.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    generate_uid,
)


@dataclass(frozen=True)
class Person:
    """A patient as the DICOM files name them (and, if ``username``, their portal account)."""

    patient_id: str
    name: str
    birth_date: str
    sex: str
    username: str | None
    charset: tuple[str, ...] = ("ISO_IR 192",)  # SpecificCharacterSet of their files


ANN = Person("ZTQ-ANN-0001", "Müller^Jörg", "19800214", "M", "ann")
BOB = Person("ZTQ-BOB-0002", "Müller^Hans", "19750505", "M", "bob")
CYD = Person("ZTQ-CYD-0003", "De La Cruz^María José", "19900909", "F", "cyd")
NOBODY = Person("ZTQ-NOBODY-0004", "Nobody^Unlinked", "19600101", "O", None)
#: ISO 2022 with JIS X 0208 (PS3.5 H.3.1): the ideographic and phonetic groups must survive.
DAI = Person(
    "ZTQ-DAI-0005", "Yamada^Tarou=山田^太郎=やまだ^たろう", "19850301", "M", "dai",
    ("", "ISO 2022 IR 87"),
)  # fmt: skip
PEOPLE = (ANN, BOB, CYD, NOBODY, DAI)

#: Accounts of the world: username -> role (patients are linked to their Patient ID).
ACCOUNTS = {
    "ann": "patient",
    "bob": "patient",
    "cyd": "patient",
    "dai": "patient",
    "drlee": "doctor",
    "tess": "technologist",
}


@dataclass(frozen=True)
class SeriesSpec:
    """One series: modality, number, description, instance count (or one multi-frame)."""

    modality: str
    number: int
    description: str
    count: int
    frames: int = 0  # > 0: one multi-frame true-colour SC instance with that many frames


@dataclass(frozen=True)
class StudySpec:
    """One study of the world."""

    key: str
    person: Person
    date: str  # "" for a study without StudyDate
    time: str
    accession: str
    description: str
    series: tuple[SeriesSpec, ...]
    shared_with: tuple[str, ...] = ()  # doctors the owning patient shares it with


SPECS = (
    StudySpec(
        "ann_ct", ANN, "20240115", "101500", "ACCA1", "CT CHEST",
        (SeriesSpec("CT", 1, "AXIAL", 3), SeriesSpec("CT", 2, "CORONAL", 2)),
        ("drlee",),
    ),
    StudySpec(
        "ann_mr", ANN, "20250310", "083000", "ACCA2", "MR BRAIN",
        (SeriesSpec("MR", 1, "T1 SAG", 2),), ("drlee",),
    ),
    StudySpec(
        "ann_mf", ANN, "20260101", "120000", "ACCA3", "MULTIFRAME",
        (SeriesSpec("OT", 1, "CINE", 1, frames=8),), ("drlee",),
    ),
    StudySpec(
        "ann_nodate", ANN, "", "", "ACCA4", "NO DATE",
        (SeriesSpec("CT", 1, "SCOUT", 1),),
    ),
    StudySpec(
        "bob_ct", BOB, "20240115", "091000", "ACCB1", "CT CHEST",
        (SeriesSpec("CT", 1, "AXIAL", 2),),
    ),
    StudySpec(
        "cyd_mr", CYD, "20240620", "140000", "ACCC1", "MR KNEE",
        (SeriesSpec("MR", 1, "PD FS", 2),), ("drlee",),
    ),
    StudySpec(
        "dai_mr", DAI, "20240620", "093000", "", "MR SPINE",
        (SeriesSpec("MR", 1, "T2 SAG", 1),), ("drlee",),
    ),  # no AccessionNumber: an empty required key (PS3.18 F.2.5)
    StudySpec(
        "nobody_ct", NOBODY, "20240115", "070000", "ACCN1", "CT CHEST",
        (SeriesSpec("CT", 1, "AXIAL", 1),),
    ),
)  # fmt: skip


@dataclass
class WrittenSeries:
    """A series on disk: its UID, spec and instance files (with their SOP Instance UIDs)."""

    uid: str
    spec: SeriesSpec
    files: list[Path] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)


@dataclass
class WrittenStudy:
    """A study on disk, with everything the tests assert on."""

    uid: str
    spec: StudySpec
    series: list[WrittenSeries]

    @property
    def files(self) -> list[Path]:
        """Every instance file of the study."""
        return [f for s in self.series for f in s.files]

    @property
    def num_instances(self) -> int:
        """NumberOfStudyRelatedInstances."""
        return sum(len(s.files) for s in self.series)

    @property
    def modalities(self) -> set[str]:
        """ModalitiesInStudy."""
        return {s.spec.modality for s in self.series}

    def seen_by(self, username: str) -> bool:
        """Whether ``username`` may see this study."""
        return username == self.spec.person.username or username in self.spec.shared_with


def _dataset(study: StudySpec, study_uid: str, s: SeriesSpec, series_uid: str, n: int) -> Dataset:
    p = study.person
    ds = Dataset()
    ds.SpecificCharacterSet = list(p.charset) if len(p.charset) > 1 else p.charset[0]
    if s.frames:
        ds.SOPClassUID = MultiFrameTrueColorSecondaryCaptureImageStorage
    else:
        ds.SOPClassUID = MRImageStorage if s.modality == "MR" else CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = p.patient_id
    ds.PatientName = p.name
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.StudyID = study.key.upper()[:16]
    ds.Modality = s.modality
    ds.SeriesNumber = s.number
    ds.SeriesDescription = s.description
    ds.SeriesDate = study.date
    ds.SeriesTime = study.time
    ds.InstanceNumber = n
    ds.Manufacturer = "ztbridge-tests"
    rng = np.random.default_rng(n + 17 * s.number)
    if s.frames:
        ds.NumberOfFrames = s.frames
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.Rows = ds.Columns = 32
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        shape = (s.frames, 32, 32, 3)
        ds.PixelData = rng.integers(0, 255, size=shape, dtype=np.uint8).tobytes()
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = 32
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.PixelSpacing = [0.5, 0.5]
        ds.ImagePositionPatient = [0, 0, float(n)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelData = rng.integers(0, 4096, size=(32, 32), dtype=np.uint16).tobytes()
    return ds


def write_study(out_dir: Path, spec: StudySpec) -> WrittenStudy:
    """Write one study's Part-10 files (Explicit VR Little Endian) with fresh UIDs."""
    study_uid = generate_uid()
    written = []
    for s in spec.series:
        ws = WrittenSeries(generate_uid(), s)
        for n in range(1, s.count + 1):
            ds = _dataset(spec, study_uid, s, ws.uid, n)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta = meta
            path = out_dir / spec.key / f"s{s.number}_{n:03d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            ws.files.append(path)
            ws.sop_uids.append(str(ds.SOPInstanceUID))
        written.append(ws)
    return WrittenStudy(study_uid, spec, written)
