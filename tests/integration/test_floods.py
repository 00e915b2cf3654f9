"""Floods against a real ``ztbridge up``: a connection flood on the plain DICOM port, and an
admitted association that pipelines C-STOREs without waiting for responses. In both, the
gateway's threads and memory stay bounded and a real modality's push in the middle succeeds.

The figures are read from the gateway process itself (psutil), never timed.
"""

from __future__ import annotations

import collections
import io
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF

from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import (
    GatewayProcess,
    dcmtk,
    logged,
    make_gateway,
    running,
    storescu,
)
from tests.support.rawdicom import associate_rq, read_pdu

pytestmark = pytest.mark.integration

# The real modality connects from 127.0.0.1; the flooder from another loopback address (an
# attacker elsewhere on the network) or from the modality's own address (pendflood2.py).
ELSEWHERE, SAME_HOST = "127.0.0.2", "127.0.0.1"
# Bounds for the connection flood, over a warmed-up baseline. Before the fix the gateway
# reached 1840 threads and ~1.9 GiB; with silent connections held without a thread, measured
# peaks are a few threads (the modality's association) and a few MiB.
FLOOD_THREAD_GROWTH = 40
FLOOD_RSS_GROWTH = 64 << 20
# Bound for the pipelining client: one instance being ingested and one being received at
# most (8 MB each here), plus ingest's working set. Before the fix: +890 MiB for 200 x 8 MB.
PIPELINE_RSS_GROWTH = 96 << 20
NETWORK_TIMEOUT = 60  # a whole PDU must arrive within this


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("floods")
    g = make_gateway(
        tmp,
        ZTBRIDGE_DICOM__ACSE_TIMEOUT="5",
        ZTBRIDGE_DICOM__NETWORK_TIMEOUT=str(NETWORK_TIMEOUT),
        ZTBRIDGE_POSTURE__RECHECK_SECONDS="1",
        ZTBRIDGE_CA_PASSPHRASE="floods-test-ca",
    )
    g.cli("ca", "init", "--host", "127.0.0.1")
    for ae, ip in (
        ("STORESCU", "127.0.0.1"),
        ("PIPELINE", "127.0.0.0/8"),
        ("TRICKLE", "127.0.0.1"),
    ):
        g.cli("device", "add", "--posture-policy", "none", "--ae", ae, "--ip", ip)
    g.cli(
        "device", "add", "--posture-policy", "none", "--ae", "TLSDEV", "--ip", "127.0.0.1",
        "--cert-out", str(tmp / "tlsdev.pem"),
    )  # fmt: skip
    with running(g):
        yield g


def tls_options(g: GatewayProcess) -> list[str]:
    """DCMTK options for TLSDEV's certificate (written beside the gateway's home)."""
    cert = g.home.parent / "tlsdev.pem"
    ca = g.home / "tls" / "ca.pem"
    return ["+tls", str(cert.with_suffix(".key")), str(cert), "+cf", str(ca)]


def process(g: GatewayProcess) -> psutil.Process:
    assert g.proc is not None
    return psutil.Process(g.proc.pid)


class Sampler:
    """Samples the gateway's thread count and RSS every 50 ms while running."""

    def __init__(self, g: GatewayProcess) -> None:
        self.proc = process(g)
        self.threads = self.proc.num_threads()
        self.rss = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.threads = max(self.threads, self.proc.num_threads())
                self.rss = max(self.rss, self.proc.memory_info().rss)
            except psutil.Error:
                return

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ConnectionFlood:
    """pendflood2.py: threads opening non-blocking connections that never send a byte and are
    reset (SO_LINGER 0) once 300 are outstanding per thread."""

    def __init__(self, port: int, source: str, threads: int = 4) -> None:
        self.port = port
        self.source = source
        self.connects = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        held: collections.deque[socket.socket] = collections.deque()
        while not self._stop.is_set():
            s = socket.socket()
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            try:
                s.bind((self.source, 0))
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            except OSError:  # out of ephemeral ports or the backlog is full: keep going
                s.close()
                time.sleep(0.001)
                continue
            held.append(s)
            self.connects += 1
            while len(held) > 300:
                held.popleft().close()
            time.sleep(0.0005)
        for s in held:
            s.close()

    def __enter__(self) -> ConnectionFlood:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def successes(out: str) -> int:
    return out.count("Received Store Response (Success)")


@pytest.mark.parametrize(
    ("source", "tls"), [(ELSEWHERE, False), (SAME_HOST, False), (SAME_HOST, True)]
)
def test_connection_flood_leaves_the_port_to_real_modalities(
    gw: GatewayProcess, tmp_path: Path, source: str, tls: bool
) -> None:
    port = int(gw.env["ZTBRIDGE_TLS__PORT"]) if tls else gw.port
    calling, options = ("TLSDEV", tls_options(gw)) if tls else ("STORESCU", [])
    files = make_ct_series(tmp_path / "ct", 10).files
    assert storescu(port, files, calling, "ZTBRIDGE", *options).returncode == 0  # warm up
    time.sleep(1)
    base_threads = process(gw).num_threads()
    base_rss = process(gw).memory_info().rss
    with Sampler(gw) as sampled, ConnectionFlood(port, source) as flood:
        time.sleep(2)  # let the flood build up first
        echo = ["echoscu", "-aet", calling, "-aec", "ZTBRIDGE", "-to", "10", *options]
        echoes = [dcmtk(*echo, "127.0.0.1", str(port)) for _ in range(5)]
        pushed = storescu(port, files, calling, "ZTBRIDGE", "-v", "-to", "10", *options)
        time.sleep(1)
    print(
        f"flood of the {'TLS' if tls else 'plain'} port from {source}: {flood.connects}"
        f" connects; threads {base_threads} -> peak {sampled.threads};"
        f" RSS {base_rss >> 20} -> peak {sampled.rss >> 20} MiB;"
        f" echoes ok {sum(e.returncode == 0 for e in echoes)}/5"
    )
    assert flood.connects > 1000, "the flood did not run"
    assert all(e.returncode == 0 for e in echoes), [e.stderr[-300:] for e in echoes]
    out = pushed.stdout + pushed.stderr
    assert pushed.returncode == 0 and successes(out) == 10, out[-2000:]
    assert sampled.threads - base_threads < FLOOD_THREAD_GROWTH
    assert sampled.rss - base_rss < FLOOD_RSS_GROWTH
    assert gw.proc is not None and gw.proc.poll() is None


def _c_store(i: int, size: int, pixels: bytes, study: str, series: str) -> list[bytes]:
    """One C-STORE-RQ (Implicit VR LE, context 3) as encoded P-DATA-TF PDUs."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.Modality = "PIPE1", "CT"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = pixels
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, ds)
    rq = C_STORE()
    rq.MessageID = i + 1
    rq.AffectedSOPClassUID = CTImageStorage
    rq.AffectedSOPInstanceUID = uid
    rq.Priority = 2
    rq.DataSet = io.BytesIO(fp.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    out = []
    for primitive in message.encode_msg(3, 262144 - 6):
        tf = P_DATA_TF()
        tf.from_primitive(primitive)
        out.append(tf.encode())
    return out


def test_pipelined_requests_abort_the_association(gw: GatewayProcess, tmp_path: Path) -> None:
    """pipeline.py: C-STOREs sent back to back without waiting for responses. We negotiate no
    asynchronous operations window, so the second request is a protocol violation: the
    gateway aborts instead of reading (and holding) the rest."""
    files = make_ct_series(tmp_path / "ct", 5).files
    assert storescu(gw.port, files).returncode == 0
    base_rss = process(gw).memory_info().rss
    size = 2048  # 8 MiB of pixels per instance
    pixels = bytes(size * size * 2)
    study, series = generate_uid(), generate_uid()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    sock.sendall(associate_rq("PIPELINE", extra_contexts=1))  # context 3: CT, Implicit VR LE
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, answer
    sent = [0]

    def pipeline() -> None:
        try:
            for i in range(40):
                for raw in _c_store(i, size, pixels, study, series):
                    sock.sendall(raw)
                sent[0] += 1
        except OSError:
            return  # the gateway hung up

    honest: list[str] = []

    def push() -> None:
        done = storescu(gw.port, files, "STORESCU", "ZTBRIDGE", "-v")
        honest.append(f"rc={done.returncode}\n{done.stdout}{done.stderr}")

    with Sampler(gw) as sampled:
        writer = threading.Thread(target=pipeline, daemon=True)
        pusher = threading.Thread(target=push)  # an honest modality, on its own association
        writer.start()
        pusher.start()
        seen = []
        while (answer := read_pdu(sock, timeout=120)) is not None:
            seen.append(answer[0])
            if answer[0] == 0x07:
                break
        writer.join(timeout=120)
        pusher.join(timeout=120)
        sock.close()
    print(
        f"pipelined: {sent[0]} of 40 x 8 MiB sent before the abort;"
        f" RSS {base_rss >> 20} -> peak {sampled.rss >> 20} MiB; gateway sent PDUs {seen}"
    )
    assert seen and seen[-1] == 0x07, seen  # A-ABORT
    assert sent[0] < 40, "the gateway read every pipelined request"
    assert logged(gw, "refused (async-window)")
    assert sampled.rss - base_rss < PIPELINE_RSS_GROWTH
    assert honest and "rc=0" in honest[0] and successes(honest[0]) == 5, honest


def quiet_thread_count(proc: psutil.Process, still_for: float = 2.0, timeout: float = 60) -> int:
    """The gateway's thread count once it has not changed for ``still_for`` seconds: the
    threads of an earlier test's associations may still be winding down."""
    count, since = proc.num_threads(), time.monotonic()
    deadline = since + timeout
    while time.monotonic() - since < still_for and time.monotonic() < deadline:
        time.sleep(0.1)
        now = proc.num_threads()
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_an_abort_is_not_held_up_by_a_stalled_pdu(gw: GatewayProcess) -> None:
    """An association aborted while its peer is in the middle of a PDU (reactor.py note: the
    reader waits up to the network timeout, 60 s here, for a whole PDU) is gone at once:
    pynetdicom's abort shuts the socket, which wakes the reader. Also the posture watch
    aborting an association whose device was removed."""
    proc = process(gw)
    baseline = quiet_thread_count(proc)
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=60)
    sock.sendall(associate_rq("TRICKLE"))
    answer = read_pdu(sock)
    assert answer is not None and answer[0] == 0x02, answer
    # A P-DATA-TF announcing 1000 bytes, and 10 of them: the reader is inside the PDU.
    sock.sendall(struct.pack(">BBL", 0x04, 0, 1000) + bytes(10))
    time.sleep(1)
    assert proc.num_threads() > baseline
    removed = time.monotonic()
    gw.cli("device", "remove", "TRICKLE")  # the posture watch (every 1 s here) notices
    assert read_pdu(sock, timeout=NETWORK_TIMEOUT) in (None, (0x07, bytes(4)))  # closed
    closed_after = time.monotonic() - removed
    while proc.num_threads() > baseline and time.monotonic() - removed < NETWORK_TIMEOUT + 10:
        time.sleep(0.1)
    released_after = time.monotonic() - removed
    sock.close()
    print(
        f"device removed: connection closed after {closed_after:.1f} s, the association's"
        f" threads gone after {released_after:.1f} s (network timeout {NETWORK_TIMEOUT} s)"
    )
    assert logged(gw, "aborted (posture): device 'TRICKLE' was removed or suspended")
    assert closed_after < NETWORK_TIMEOUT / 2
    assert released_after < NETWORK_TIMEOUT / 2
