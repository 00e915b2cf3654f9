"""Hand-encoded hostile data sets for issue #8 (items 1, 2, 7), and a sender for them.

Each builder returns the data set bytes exactly as they go on the wire (no file meta), with
the identifiers a test needs; ``send`` pushes them through pynetdicom's SCU unchanged.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from unittest import mock

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, _config, association
from sqlalchemy import select

from gateway.dataset import file_meta
from gateway.index.database import Database
from gateway.index.models import instances
from tests.support.gateway_proc import GatewayProcess, make_gateway

EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
BOMB_PIXEL_BYTES = 2_000_000_000


@dataclass(frozen=True)
class Raw:
    """A data set as sent: its bytes, transfer syntax and identifiers."""

    data: bytes
    transfer_syntax: str
    sop_class: str
    sop_instance: str
    study_uid: str


def ct(study_uid: str | None = None, rows: int = 16, columns: int = 16) -> Dataset:
    """A valid CT header (no Pixel Data), fresh UIDs."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate = "20260101"
    ds.Modality = "CT"
    ds.PatientName = "TEST^HOSTILE"
    ds.PatientID = "PATHOSTILE1"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def encode(ds: Dataset) -> bytes:
    """Explicit VR little endian, element by element as pydicom writes them (group 0002
    elements in ``ds`` itself are written where they sort, as a hostile sender would)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def raw(ds: Dataset, data: bytes, transfer_syntax: str = EXPLICIT_LE) -> Raw:
    return Raw(
        data, transfer_syntax, str(ds.SOPClassUID), str(ds.SOPInstanceUID), ds.StudyInstanceUID
    )


def pixel_element(length: int) -> bytes:
    """The header of a Pixel Data element (OW) of ``length`` bytes."""
    return b"\xe0\x7f\x10\x00OW\0\0" + length.to_bytes(4, "little")


@functools.cache
def _bomb_body(pixel_bytes: int) -> tuple[bytes, bytes, int]:
    """Deflate of ``pixel_bytes`` zeros as (repeated block, tail, count), built from a
    few compressed blocks: after a full flush the compressor starts afresh, so every block of
    zeros compresses to the same bytes (~1030:1), and 2 GB cost milliseconds, not seconds."""
    block = 16 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    one = c.compress(b"\0" * block) + c.flush(zlib.Z_FULL_FLUSH)
    two = c.compress(b"\0" * block) + c.flush(zlib.Z_FULL_FLUSH)
    assert one == two  # the property the construction rests on
    rest = pixel_bytes % block
    tail = c.compress(b"\0" * rest) + c.flush(zlib.Z_FINISH)
    return one, tail, pixel_bytes // block


def deflate_bomb(pixel_bytes: int = BOMB_PIXEL_BYTES, study_uid: str | None = None) -> Raw:
    """A valid CT header plus Pixel Data of ``pixel_bytes`` zeros, Deflated Explicit VR LE
    (the issue's case: 2,000,000,000 bytes in 1.94 MB)."""
    ds = ct(study_uid)
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(encode(ds) + pixel_element(pixel_bytes)) + c.flush(zlib.Z_FULL_FLUSH)
    block, tail, count = _bomb_body(pixel_bytes)
    data = head + block * count + tail
    if len(data) % 2:
        data += b"\0"  # PS3.5 A.5: an odd deflated stream is padded with one NUL
    return raw(ds, data, DEFLATED)


def meta_in_dataset(study_uid: str | None = None) -> Raw:
    """A CT data set (16 x 16, Explicit VR LE) that starts with group 0002 elements of its
    own naming MR Image Storage, another instance and Explicit VR Big Endian."""
    ds = ct(study_uid)
    ds.PixelData = b"\0" * (16 * 16 * 2)
    hostile = Dataset()
    hostile.add_new(0x00020002, "UI", MR_IMAGE)
    hostile.add_new(0x00020003, "UI", generate_uid())
    hostile.add_new(0x00020010, "UI", BIG_ENDIAN)
    return raw(ds, encode(hostile) + encode(ds))


def absurd_geometry(study_uid: str | None = None) -> Raw:
    """Rows = Columns = 65535, Bits Allocated 65535, 3 samples, 2^31-1 frames, 16 bytes of
    Pixel Data (the issue's case 7)."""
    ds = ct(study_uid, rows=65535, columns=65535)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 65535
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.NumberOfFrames = 2**31 - 1
    ds.PixelData = b"\x01" * 16
    return raw(ds, encode(ds))


def write_part10(item: Raw, path: Path) -> Path:
    """A Part-10 file of ``item`` exactly as sent (its data set after our file meta)."""
    meta = file_meta(item.sop_class, item.sop_instance, item.transfer_syntax, None)
    path.write_bytes(meta + item.data)
    return path


def _split_by_group_length(path: Path) -> tuple[Dataset, int]:
    """pynetdicom's ``split_dataset`` by the file meta group length (PS3.10 7.1) rather than
    by the end of the run of group 0002 elements: a data set that itself starts with group
    0002 elements is then sent as it is in the file, which is the point of the test."""
    with path.open("rb") as f:
        head = f.read(144)
        end = 144 + int.from_bytes(head[140:144], "little")
        f.seek(132)
        meta = read_dataset(BytesIO(f.read(end - 132)), False, True)
    return meta, end


def send(port: int, items: Sequence[Raw], folder: Path, calling: str) -> list[int]:
    """C-STORE hand-encoded data sets over one association with pynetdicom, each streamed
    from a Part-10 file byte for byte (never decoded or re-encoded). Returns the statuses
    (-1: no response)."""
    files = [write_part10(item, folder / f"{item.sop_instance}.dcm") for item in items]
    ae = AE(ae_title=calling)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 300
    for sop_class, ts in {(i.sop_class, i.transfer_syntax) for i in items}:
        ae.add_requested_context(sop_class, [ts])
    statuses = []
    with (
        mock.patch.object(_config, "STORE_SEND_CHUNKED_DATASET", True),
        mock.patch.object(association, "split_dataset", _split_by_group_length),
    ):
        assoc = ae.associate("127.0.0.1", port, ae_title="ZTBRIDGE")
        assert assoc.is_established, "association refused"
        try:
            for path in files:
                status = assoc.send_c_store(path)
                statuses.append(int(status.Status) if "Status" in status else -1)
        finally:
            assoc.release()
    return statuses


def hostile_gateway(tmp: Path, **env: str) -> GatewayProcess:
    """A fresh gateway home with the devices HOSTILE (pynetdicom) and STORESCU (DCMTK)
    registered for 127.0.0.1, posture policy none; not started."""
    gw = make_gateway(tmp, **env)
    for ae in ("HOSTILE", "STORESCU"):
        gw.cli(
            "device", "add", "--ae", ae, "--ip", "127.0.0.1", "--name", ae.lower(),
            "--posture-policy", "none",
        )  # fmt: skip
    return gw


def exported(gw: GatewayProcess, study_uid: str, out: Path) -> dict[str, bytes]:
    """SOP Instance UID -> the data set bytes (after the file meta group, found by its group
    length) of every file ``ztbridge export`` writes for the study; the export must succeed."""
    gw.cli("export", "--study", study_uid, "--out", str(out))
    found = {}
    for path in sorted(out.rglob("*.dcm")):
        content = path.read_bytes()
        end = 144 + int.from_bytes(content[140:144], "little")
        found[path.stem] = content[end:]
    return found


def pixel_flags(gw: GatewayProcess) -> dict[str, str | None]:
    """SOP Instance UID -> ``instances.pixel_flag`` of every row in the gateway's index."""
    db = Database(f"sqlite:///{gw.home / 'index.sqlite3'}")
    try:
        with db.read() as conn:
            rows = conn.execute(select(instances.c.sop_instance_uid, instances.c.pixel_flag))
            return {r.sop_instance_uid: r.pixel_flag for r in rows}
    finally:
        db.close()


def verified(gw: GatewayProcess) -> None:
    """``store verify`` and ``audit verify`` pass."""
    assert "store verified" in gw.cli("store", "verify").stdout
    assert "audit chain intact" in gw.cli("audit", "verify").stdout
