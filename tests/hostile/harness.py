"""The hostile-input family's harness: one real ``ztbridge up`` per module, raw sockets (plain
and DICOM TLS) for what no real peer would send, and the checks every case ends with.

Each case asserts its own answer (a status, an A-ASSOCIATE-RJ, an A-ABORT); then
``HostileGateway.alive`` proves the gateway still serves (a DCMTK echo and store, both
succeeding), ``clean_since`` that nothing the peer sent produced a traceback, a dead thread or
a raw control character in the log, and at the end of a module ``read_back`` that
``store verify`` and ``audit verify`` pass and every acknowledged instance exports byte-exact.
PDU builders live in tests/support/rawdicom.py (shared with tests/integration).
"""

from __future__ import annotations

import itertools
import re
import select
import socket
import ssl
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from pydicom.uid import generate_uid

from gateway.dataset import split_part10
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
        assert "store verified" in self.gw.cli("store", "verify").stdout
        assert "audit chain intact" in self.gw.cli("audit", "verify").stdout
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
    from io import BytesIO

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
