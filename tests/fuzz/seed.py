"""Write the fuzzers' seed corpora (tests/fuzz/corpus/<target>/) from the tests' own inputs.

    python tests/fuzz/seed.py

Deterministic (fixed UIDs and seeds), so re-running it rewrites the same files; the seeds are
committed so CI and a long run start from the same place.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.hostile.test_dul import BROKEN_DIMSE
from tests.support.dicomgen import COMPRESSED_TESTDATA
from tests.support.rawdicom import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    VERIFICATION,
    associate_rq,
    c_echo_rq,
    c_store_rq,
    dimse,
)

CORPUS = Path(__file__).with_name("corpus")


def _ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.10.1433.9.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.10.1433.9.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1433.9.3"
    ds.PatientID, ds.PatientName, ds.Modality = "FUZZ1", "FUZZ^SEED", "CT"
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator = "T-D1100", "SRT"
    ds.AnatomicRegionSequence = Sequence([inner])
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    return ds


def _encode(ds: Dataset, implicit: bool, little: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = little, implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def dataset_seeds() -> list[bytes]:
    ct = _ct()
    explicit = _encode(ct, False, True)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = compressor.compress(explicit) + compressor.flush()
    seeds = [
        b"\x00" + _encode(ct, True, True),
        b"\x01" + explicit,
        b"\x02" + _encode(ct, False, False),
        b"\x03" + deflated,
    ]
    from pydicom.data import get_testdata_file

    for name in COMPRESSED_TESTDATA[:2]:  # encapsulated pixel data
        path = get_testdata_file(name)
        assert isinstance(path, str)
        seeds.append(b"\x01" + _encode(dcmread(path), False, True)[:16384])
    return seeds


def pdu_seeds() -> list[bytes]:
    ct = _encode(_ct(), True, True)
    contexts = [(1, VERIFICATION), (3, CT_IMAGE_STORAGE), (5, MR_IMAGE_STORAGE)]
    seeds = [
        associate_rq("FUZZ"),
        associate_rq("FUZZ", contexts=contexts),
        associate_rq("FUZZ", contexts=[(2, VERIFICATION)]),
        dimse(1, c_echo_rq()),
        dimse(3, c_store_rq(CT_IMAGE_STORAGE, "1.2.826.0.1.3680043.10.1433.9.1"), ct, 40),
        dimse(3, c_store_rq(MR_IMAGE_STORAGE, "1.2.3"), ct),
    ]
    seeds += [raw for raw, _check in BROKEN_DIMSE.values()]
    return seeds


def main() -> None:
    for target, seeds in (("dataset", dataset_seeds()), ("pdu", pdu_seeds())):
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # libFuzzer's names
        print(f"{target}: {len(seeds)} seeds in {folder}")


if __name__ == "__main__":
    main()
