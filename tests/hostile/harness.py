"""The hostile-input family's harness: one real ``ztbridge up`` shared by the family's
modules (tests/hostile/conftest.py), raw sockets (plain and DICOM TLS) and hand-encoded data
sets for what no real peer would send, and the checks every case ends with.

Each case asserts its own answer (a status, an A-ASSOCIATE-RJ, an A-ABORT); then
``HostileGateway.alive`` proves the gateway still serves (a DCMTK echo and store, both
succeeding), ``clean_since`` that nothing the peer sent produced a traceback, a dead thread or
a raw control character in the log, and at the end of a module ``read_back`` that
``store verify`` and ``audit verify`` pass and every acknowledged instance exports byte-exact.
PDU builders live in tests/support/rawdicom.py (shared with tests/integration).

The data set builders (issue #8, items 1, 2, 7) return the bytes exactly as they go on the
wire (no file meta), with the identifiers a test needs; ``send`` pushes them through
pynetdicom's SCU unchanged. The unit tests of the same inputs (tests/unit) use them too.
"""

from __future__ import annotations

import functools
import itertools
import re
import select
import socket
import ssl
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from unittest import mock

import psutil
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, _config, association
from sqlalchemy import select as sql_select

from gateway.dataset import file_meta, split_part10
from gateway.index.database import Database
from gateway.index.models import instances as instances_table
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import GatewayProcess, dcmtk, make_gateway, running, storescu
from tests.support.rawdicom import associate_rq, closed, read_pdu

ACCEPT, REJECT, P_DATA, ABORT = 0x02, 0x03, 0x04, 0x07
MODALITY = "STORESCU"  # the honest modality: plain TCP from 127.0.0.1
HOSTILE = "HOSTILE"  # registered, admitted, and sending what it should not (plain TCP)
HOSTILE_TLS = "HOSTILETLS"  # the same over DICOM TLS, with its own client certificate
CA_PASSPHRASE = "hostile-family-ca"

# Signs in a log line that a peer's bytes reached Python's exception machinery or the
# terminal raw: a traceback, a thread that died of it, an escape or other control byte.
_UNCLEAN = re.compile(r"Traceback \(most recent call last\)|Exception in thread|thread \S+ died")
_RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_names = itertools.count(1)


def rss(g: GatewayProcess) -> int:
    """The gateway process's resident memory, in bytes."""
    assert g.proc is not None
    return int(psutil.Process(g.proc.pid).memory_info().rss)


def threads(g: GatewayProcess) -> int:
    """The gateway process's thread count."""
    assert g.proc is not None
    return int(psutil.Process(g.proc.pid).num_threads())


def still_open(s: socket.socket) -> bool:
    """Whether the gateway still holds this association (no A-ABORT or close received)."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return True
    s.close()
    return False


@dataclass
class HostileGateway:
    """A running gateway with the family's devices, and what it acknowledged."""

    gw: GatewayProcess
    tmp: Path
    tls_port: int | None = None
    baseline_rss: int = 0  # a module's warmed-up figures, for its bounds
    baseline_threads: int = 0
    #: One study for every instance the checks store: ``read_back`` exports each study with
    #: a CLI call (seconds of start-up each), so tests add theirs to this one too.
    study_uid: str = field(default_factory=generate_uid)
    #: SOP Instance UID -> (Study Instance UID, the data set bytes as sent)
    acknowledged: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gw.port

    # --- connecting --------------------------------------------------------------------

    def connect(self, tls: bool = False, timeout: float = 30) -> socket.socket:
        """A raw connection to the plain port, or a TLS one as HOSTILETLS."""
        if not tls:
            return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        assert self.tls_port is not None, "this gateway has no DICOM TLS port (tls=True)"
        context = ssl.create_default_context(cafile=str(self.gw.home / "tls" / "ca.pem"))
        cert = self.tmp / "hostiletls.pem"
        context.load_cert_chain(str(cert), str(cert.with_suffix(".key")))
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=timeout)
        return context.wrap_socket(raw, server_hostname="127.0.0.1")

    def exchange(self, *pdus: bytes, tls: bool = False, timeout: float = 30) -> tuple[int, bytes]:
        """Send raw PDUs on a fresh connection; the gateway's answer, and it hung up."""
        with self.connect(tls) as s:
            for p in pdus:
                s.sendall(p)
            answer = read_pdu(s, timeout)
            assert answer is not None, "connection closed without an answer"
            assert closed(s, timeout), "the gateway kept a hostile connection open"
            return answer

    def established(
        self, calling: str = HOSTILE, tls: bool = False, rq: bytes | None = None
    ) -> socket.socket:
        """An accepted association (Verification on 1, CT Image Storage on 3 by default)."""
        calling = HOSTILE_TLS if tls and calling == HOSTILE else calling
        s = self.connect(tls)
        s.sendall(rq or associate_rq(calling, extra_contexts=1))
        answer = read_pdu(s)
        assert answer is not None and answer[0] == ACCEPT, answer
        return s

    # --- the checks each case ends with ------------------------------------------------

    def mark(self) -> int:
        """Where the log ends now (for ``clean_since``)."""
        return len(self.gw.log())

    def log_since(self, mark: int) -> str:
        return self.gw.log()[mark:]

    def clean_since(self, mark: int) -> str:
        """The log since ``mark``, asserted free of tracebacks, dead threads and raw control
        bytes (line breaks apart)."""
        text = self.log_since(mark)
        found = _UNCLEAN.search(text)
        assert found is None, f"{found.group()!r} in the log:\n{text[-4000:]}"
        raw = _RAW_CONTROL.search(text)
        assert raw is None, f"raw control byte {raw.group()!r} in the log:\n{text[-4000:]}"
        return text

    def push(self, files: Sequence[Path], calling: str = MODALITY) -> None:
        """storescu ``files`` over one association, all acknowledged; remembered."""
        done = storescu(self.port, files, calling, "ZTBRIDGE", "-v")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        assert out.count("Received Store Response (Success)") == len(files), out[-3000:]
        for f in files:
            self.remember(f.read_bytes())

    def remember(self, part10: bytes) -> None:
        """Note an instance the gateway acknowledged (a Part-10 file's bytes)."""
        part = split_part10(part10)
        assert part.sop_instance is not None
        study = _study_uid(part10)
        self.acknowledged[part.sop_instance] = (study, bytes(part.dataset))

    def remember_dataset(self, sop_instance: str, study_uid: str, dataset: bytes) -> None:
        """Note an instance acknowledged from a raw C-STORE (its data set as sent)."""
        self.acknowledged[sop_instance] = (study_uid, dataset)

    def alive(self) -> None:
        """A valid echo and a valid store, right now: the gateway still serves."""
        assert self.gw.proc is not None and self.gw.proc.poll() is None, "the gateway exited"
        echo = dcmtk("echoscu", "-aet", MODALITY, "-aec", "ZTBRIDGE", "127.0.0.1", str(self.port))
        assert echo.returncode == 0, echo.stdout + echo.stderr
        self.push(self.instances(1))

    def instances(self, count: int) -> list[Path]:
        """``count`` small CT images (16 x 16) of the module's study, as Part-10 files."""
        n = next(_names)
        folder = self.tmp / f"ct-{n}"
        series = make_ct_series(
            folder, count, rows=16, columns=16, seed=n, patient_id="HOSTILE1",
            study_uid=self.study_uid,
        )  # fmt: skip
        return series.files

    def read_back(self) -> None:
        """``store verify`` and ``audit verify`` pass, and every instance acknowledged so far
        exports byte-exact (and nothing else in those studies does)."""
        verified(self.gw)
        studies = {study for study, _ in self.acknowledged.values()}
        exported: dict[str, bytes] = {}
        for study in sorted(studies):
            out = self.tmp / f"export-{next(_names)}"
            self.gw.cli("export", "--study", study, "--out", str(out))
            for path in out.rglob("*.dcm"):
                part = split_part10(path.read_bytes())
                assert part.sop_instance is not None
                exported[part.sop_instance] = bytes(part.dataset)
        expected = {uid: data for uid, (_, data) in self.acknowledged.items()}
        assert exported.keys() == expected.keys(), (
            sorted(exported.keys() - expected.keys()),
            sorted(expected.keys() - exported.keys()),
        )
        for uid, data in expected.items():
            assert exported[uid] == data, f"{uid} exported differs from what was sent"


def _study_uid(part10: bytes) -> str:
    from pydicom import dcmread

    return str(dcmread(BytesIO(part10), stop_before_pixels=True).StudyInstanceUID)


@contextmanager
def hostile_gateway(tmp: Path, *, tls: bool = False, **env: str) -> Iterator[HostileGateway]:
    """A running gateway with the family's devices: MODALITY and HOSTILE on plain TCP from
    127.0.0.1 (posture policy 'none'), and with ``tls`` a CA, the DICOM TLS port and
    HOSTILETLS with its certificate written beside the home. ``env``: more ZTBRIDGE_*."""
    settings = {"ZTBRIDGE_CA_PASSPHRASE": CA_PASSPHRASE, **env}
    g = make_gateway(tmp, **settings)
    if tls:
        g.cli("ca", "init", "--host", "127.0.0.1")
    for ae in (MODALITY, HOSTILE):
        g.cli("device", "add", "--posture-policy", "none", "--ae", ae, "--ip", "127.0.0.1")
    if tls:
        g.cli(
            "device", "add", "--posture-policy", "none", "--ae", HOSTILE_TLS,
            "--ip", "127.0.0.1", "--cert-out", str(tmp / "hostiletls.pem"),
        )  # fmt: skip
    with running(g):
        yield HostileGateway(g, tmp, int(g.env["ZTBRIDGE_TLS__PORT"]) if tls else None)


def abort_reason(answer: tuple[int, bytes]) -> tuple[int, int]:
    """(source, reason) of an A-ABORT PDU's body."""
    assert answer[0] == ABORT, answer
    source, reason = struct.unpack_from(">BB", answer[1], 2)
    return source, reason


# --- hand-encoded hostile data sets, and a sender for them -------------------------------

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
            rows = conn.execute(
                sql_select(instances_table.c.sop_instance_uid, instances_table.c.pixel_flag)
            )
            return {r.sop_instance_uid: r.pixel_flag for r in rows}
    finally:
        db.close()


def verified(gw: GatewayProcess) -> None:
    """``store verify`` and ``audit verify`` pass."""
    assert "store verified" in gw.cli("store", "verify").stdout
    assert "audit chain intact" in gw.cli("audit", "verify").stdout
