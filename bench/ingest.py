"""Ingest benchmark: DCMTK ``storescu`` pushing one CT series to four receivers.

Prints figures, never pass/fail. In one run it generates a 512x512 16-bit CT series
(``--count`` instances, 300 by default) and pushes it with ``storescu`` over ONE association,
with identical options, to:

  ztbridge    ``ztbridge up`` (the gateway: admission, encryption, content store, index)
  storescp    DCMTK ``storescp`` writing plain files
  pynetdicom  ``bench/bare_scp.py``: a bare pynetdicom SCP that only writes files
  orthanc     Orthanc (Debian package) with files + SQLite storage, from a generated config

For each it reports instances/s and MB/s (wall time from ``storescu`` start to its exit;
MB = 10^6 bytes of Part-10 files sent), best and median over ``--repeat`` runs, the peak
RSS of the receiver's process tree, and the ratios against the issue's bar: ztbridge must
reach at least 80% of the bare pynetdicom SCP's instances/s and at least Orthanc's.

Transport: DCMTK (storescu, storescp, and Orthanc's DICOM server, which is DCMTK's
``dcmnet``) leaves Nagle's algorithm on unless the environment variable ``TCP_NODELAY=1`` is
set (checked with strace on DCMTK 3.6.7: without it no ``setsockopt(TCP_NODELAY)`` is made;
the trace log says "using the default value (0)"). Left on, storescp answers each C-STORE
~40 ms late (delayed ACK). The benchmark therefore runs every DCMTK process with
``TCP_NODELAY=1`` (``--dcmtk-tcp-nodelay 0`` to see the difference); the bare pynetdicom SCP
sets ``TCP_NODELAY`` itself on accepted sockets, as ztbridge's SCP must.

``--memory-study-gb N`` switches to the memory mode: push a ~N GiB study
(``make_large_study``) to ztbridge only and sample its process tree's RSS every 50 ms,
reporting the peak against the 400 MB bar.

Run::

    .venv/bin/python bench/ingest.py                      # all four, 300 instances, 2 runs
    .venv/bin/python bench/ingest.py --count 100 --repeat 3 --receivers storescp,pynetdicom
    .venv/bin/python bench/ingest.py --memory-study-gb 2
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CALLING_AE = "STORESCU"
RECEIVER_NAMES = ("ztbridge", "storescp", "pynetdicom", "orthanc")
BAR_VS_BARE = 0.80
BAR_VS_ORTHANC = 1.00
BAR_RSS_MB = 400.0
MB = 1_000_000
DCMTK_MAX_PDU = 131072  # storescu/storescp/Orthanc accept 4096..131072
MIB = 1 << 20
READY_TIMEOUT_S = 120.0
ZTBRIDGE_PASSPHRASE = "bench-passphrase-not-secret"


class ReceiverError(RuntimeError):
    """A receiver could not be started or did not become ready."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port free on loopback right now (the usual bind-to-0 trick; racy but fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@functools.cache
def find_dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool, skipping same-named pynetdicom apps in the venv.

    The venv's ``bin/`` holds pynetdicom's own ``storescu``/``storescp``/``echoscu``; if the
    venv is activated they shadow DCMTK's on PATH. A DCMTK binary says ``$dcmtk:`` in its
    ``--version`` output.
    """
    candidates = [str(Path(d) / tool) for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    candidates += [f"/usr/bin/{tool}", f"/usr/local/bin/{tool}"]
    for cand in candidates:
        if not os.access(cand, os.X_OK):
            continue
        try:
            out = subprocess.run(
                [cand, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "$dcmtk" in out:
            return cand
    raise SystemExit(f"DCMTK '{tool}' not found on PATH; install it: apt-get install dcmtk")


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, or a note that it is empty/missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    rows = text.rstrip().splitlines()[-lines:]
    return "\n".join("    | " + r for r in rows) if rows else "    | (empty)"


def wait_tcp(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``.

    Raises :class:`ReceiverError` if ``proc`` exits first or ``timeout`` runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ReceiverError(f"process exited with status {proc.returncode} before listening")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ReceiverError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 30.0) -> None:
    """SIGTERM ``proc`` (only that process), SIGKILL it if it has not exited after ``grace``."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process and its live descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return total
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def dir_file_count(path: Path) -> int:
    """Number of regular files below ``path``."""
    return sum(1 for p in path.rglob("*") if p.is_file())


class RssSampler:
    """Samples the RSS of a process and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_bytes = 0
        self.first_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _tree_rss(self, root: psutil.Process) -> int:
        total = 0
        procs = [root]
        with contextlib.suppress(psutil.Error):
            procs += root.children(recursive=True)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            rss = self._tree_rss(root)
            if not self.samples:
                self.first_bytes = rss
            self.samples += 1
            self.peak_bytes = max(self.peak_bytes, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- receivers


class Receiver:
    """One receiving application: started fresh (empty storage) for every run."""

    name = ""
    called_ae = ""
    description = ""

    def __init__(self, base: Path, dcmtk_env: dict[str, str], max_pdu: int = 0) -> None:
        self.base = base
        self.dcmtk_env = dcmtk_env
        self.max_pdu = max_pdu  # 0: the receiver's own default
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.run_dir = base
        self.log_path = base / "receiver.log"
        self._log: IO[bytes] | None = None

    def _spawn(self, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(cmd),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.run_dir,
        )

    def start(self, run_dir: Path) -> None:
        """Start with empty storage under ``run_dir`` and wait until it accepts C-ECHO."""
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = run_dir / "receiver.log"
        self.port = free_port()
        self._start()
        wait_tcp(self.port, self.proc, READY_TIMEOUT_S)
        self._ready()

    def _start(self) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        """Extra readiness check after the port accepts connections (default: none)."""

    def received(self) -> int | None:
        """How many instances the receiver holds now, or None if it cannot tell."""
        return None

    def stop(self) -> None:
        """Stop the process and close its log."""
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class StorescpReceiver(Receiver):
    """(b) DCMTK storescp writing plain files."""

    name = "storescp"
    called_ae = "STORESCP"
    description = "DCMTK storescp, plain files, no fsync"

    def _start(self) -> None:
        out = self.run_dir / "data"
        out.mkdir()
        cmd = [find_dcmtk("storescp"), "-aet", self.called_ae, "-od", str(out)]
        if self.max_pdu:
            cmd += ["-pdu", str(min(self.max_pdu, DCMTK_MAX_PDU))]
        cmd.append(str(self.port))
        self._spawn(cmd, env={**os.environ, **self.dcmtk_env})

    def received(self) -> int | None:
        return dir_file_count(self.run_dir / "data")


class BarePynetdicomReceiver(Receiver):
    """(c) bench/bare_scp.py: pynetdicom SCP that only writes files (TCP_NODELAY on)."""

    name = "pynetdicom"
    called_ae = "BARESCP"
    description = "bare pynetdicom SCP, plain files, no fsync"
    fsync = False

    def enable_fsync(self) -> None:
        """fsync every file before answering: the durable baseline (``--bare-fsync``)."""
        self.fsync = True
        self.description = "bare pynetdicom SCP, plain files, fsync each"

    def _start(self) -> None:
        out = self.run_dir / "data"
        cmd = [
            sys.executable,
            str(BENCH / "bare_scp.py"),
            "--port",
            str(self.port),
            "--aet",
            self.called_ae,
            "--out-dir",
            str(out),
        ]
        if self.max_pdu:
            cmd += ["--max-pdu", str(self.max_pdu)]
        if self.fsync:
            cmd.append("--fsync")
        self._spawn(cmd)

    def received(self) -> int | None:
        return dir_file_count(self.run_dir / "data")


class OrthancReceiver(Receiver):
    """(d) Orthanc with default storage (files + SQLite index) from a generated config."""

    name = "orthanc"
    called_ae = "ORTHANC"
    description = "Orthanc, files (fsync) + SQLite index"

    def __init__(self, base: Path, dcmtk_env: dict[str, str], max_pdu: int = 0) -> None:
        super().__init__(base, dcmtk_env, max_pdu)
        self.http_port = 0

    def _start(self) -> None:
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        if not Path(binary).exists():
            raise ReceiverError("Orthanc not installed (apt-get install orthanc)")
        self.http_port = free_port()
        config = {
            "Name": "ztbridge-bench",
            "StorageDirectory": str(self.run_dir / "storage"),
            "IndexDirectory": str(self.run_dir / "index"),
            "DicomAet": self.called_ae,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomCheckCalledAet": False,
            # Loopback only: the bench talks to it from this host, and an unauthenticated
            # Orthanc should not be reachable from the network even for a few seconds.
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "LuaScripts": [],
            "SaveJobs": False,
        }
        if self.max_pdu:
            config["MaximumPduLength"] = min(self.max_pdu, DCMTK_MAX_PDU)
        cfg = self.run_dir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        self._spawn([binary, str(cfg)], env={**os.environ, **self.dcmtk_env})

    def _get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)

    def _ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                self._get("/system")
                return
            except (urllib.error.URLError, OSError) as exc:
                if self.proc is not None and self.proc.poll() is not None:
                    raise ReceiverError(f"Orthanc exited ({self.proc.returncode})") from exc
                if time.monotonic() > deadline:
                    raise ReceiverError(f"Orthanc HTTP /system not answering: {exc}") from exc
                time.sleep(0.1)

    def received(self) -> int | None:
        try:
            return int(self._get("/statistics")["CountInstances"])
        except (urllib.error.URLError, OSError, KeyError, ValueError):
            return None


class ZtbridgeReceiver(Receiver):
    """(a) ztbridge up, with a fresh ZTBRIDGE_HOME and the sending device registered."""

    name = "ztbridge"
    called_ae = "ZTBRIDGE"
    description = "ztbridge up (gateway; durable: fsync + commit)"

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "ZTBRIDGE_HOME": str(self.run_dir / "zt"),
            "ZTBRIDGE_DICOM__PORT": str(self.port),
            "ZTBRIDGE_CUSTODIAN_PASSPHRASE": ZTBRIDGE_PASSPHRASE,
        }
        if self.max_pdu:
            env["ZTBRIDGE_DICOM__MAX_PDU_LENGTH"] = str(self.max_pdu)
        return env

    def _exe(self) -> str:
        exe = Path(sys.executable).parent / "ztbridge"
        if not exe.exists():
            exe = ROOT / ".venv" / "bin" / "ztbridge"
        if not exe.exists():
            raise ReceiverError(f"no ztbridge executable at {exe} (pip install -e .)")
        return str(exe)

    def _start(self) -> None:
        exe = self._exe()
        add = [exe, "device", "add", "--ae", CALLING_AE, "--ip", "127.0.0.1/32", "--name", "bench"]
        add += ["--posture-policy", "none"]  # storescu runs no posture agent
        try:
            done = subprocess.run(
                add, env=self._env(), capture_output=True, text=True, timeout=300, cwd=self.run_dir
            )
        except subprocess.TimeoutExpired as exc:
            raise ReceiverError("`ztbridge device add` did not finish in 300 s") from exc
        if done.returncode != 0:
            out = (done.stdout + done.stderr).rstrip().splitlines()[-25:]
            raise ReceiverError(
                f"`ztbridge device add` exited with {done.returncode}:\n"
                + "\n".join("    | " + r for r in out)
            )
        self._spawn([exe, "up"], env=self._env())

    def _ready(self) -> None:
        echo = subprocess.run(
            [
                find_dcmtk("echoscu"),
                "-aet",
                CALLING_AE,
                "-aec",
                self.called_ae,
                "127.0.0.1",
                str(self.port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.dcmtk_env},
        )
        if echo.returncode != 0:
            raise ReceiverError(
                "port open but C-ECHO failed: " + (echo.stdout + echo.stderr).strip()
            )


RECEIVER_CLASSES: dict[str, type[Receiver]] = {
    "ztbridge": ZtbridgeReceiver,
    "storescp": StorescpReceiver,
    "pynetdicom": BarePynetdicomReceiver,
    "orthanc": OrthancReceiver,
}


# --------------------------------------------------------------------------- pushing


@dataclass
class RunResult:
    """One push of the whole series to one receiver."""

    receiver: str
    run: int
    seconds: float = 0.0
    sent_ok: int = 0
    received: int | None = None
    peak_rss_bytes: int = 0
    idle_rss_bytes: int = 0
    cpu_seconds: float = 0.0
    rss_samples: int = 0
    max_send_pdv: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """The push completed (the figures are meaningful)."""
        return not self.error


@dataclass
class Push:
    """What storescu sends and how."""

    files: list[Path]
    total_bytes: int
    storescu: str
    options: list[str]
    env: dict[str, str]
    timeout: float

    def command(self, called_ae: str, port: int) -> list[str]:
        """The storescu command line for one receiver."""
        return [
            self.storescu,
            *self.options,
            "-aec",
            called_ae,
            "127.0.0.1",
            str(port),
            *map(str, self.files),
        ]

    def shown(self) -> str:
        """The command line as printed (files abbreviated)."""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        opts = " ".join(self.options)
        return (
            f"{env} {self.storescu} {opts} -aec <CALLED_AE> 127.0.0.1 <PORT> "
            f"<{len(self.files)} files: {self.files[0].parent}/*.dcm>"
        )


_SUCCESS = re.compile(r"Received Store Response \(Success\)")
_PDV = re.compile(r"Max Send PDV: (\d+)")


def wait_idle(pid: int, max_seconds: float, window: float = 1.0) -> None:
    """Wait until the process tree uses under 5% of one CPU over ``window``, at most
    ``max_seconds`` (work a receiver does after the association is released, e.g. sealing a
    study manifest, still counts towards its peak RSS)."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(pid)
        time.sleep(window)
        if tree_cpu_seconds(pid) - before < 0.05 * window:
            return


def push_once(
    receiver: Receiver, push: Push, run: int, run_dir: Path, settle: float = 0.0
) -> RunResult:
    """Start ``receiver`` fresh, push the series once, stop it, return the figures.

    ``settle``: after storescu exits, keep sampling RSS until the receiver is idle, for at
    most this many seconds (timing is unaffected).
    """
    result = RunResult(receiver.name, run)
    try:
        receiver.start(run_dir)
    except (ReceiverError, OSError, subprocess.SubprocessError) as exc:
        receiver.stop()
        result.error = f"{receiver.name} failed to start: {exc}"
        if receiver.log_path.exists():
            result.error += f"\n  log tail ({receiver.log_path}):\n" + tail(receiver.log_path)
        return result
    assert receiver.proc is not None
    scu_log = run_dir / "storescu.log"
    try:
        with RssSampler(receiver.proc.pid) as rss, scu_log.open("wb") as log:
            cpu0 = tree_cpu_seconds(receiver.proc.pid)
            t0 = time.perf_counter()
            scu = subprocess.Popen(
                push.command(receiver.called_ae, receiver.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **push.env},
            )
            # A blocking wait, not Popen.wait(timeout): that one polls with sleeps growing to
            # 50 ms, which quantised every push time (300 instances in ~1.2 s: +-4 %).
            killer = threading.Timer(push.timeout, scu.kill)
            killer.start()
            try:
                rc = scu.wait()
            finally:
                killer.cancel()
            result.seconds = time.perf_counter() - t0
            if rc < 0 and result.seconds >= push.timeout:
                result.error = f"storescu timed out after {push.timeout:.0f} s"
            result.cpu_seconds = tree_cpu_seconds(receiver.proc.pid) - cpu0
            # Let the sampler see the receiver right after the last response too.
            time.sleep(0.1)
            if settle > 0:
                wait_idle(receiver.proc.pid, settle)
        result.peak_rss_bytes = rss.peak_bytes
        result.idle_rss_bytes = rss.first_bytes
        result.rss_samples = rss.samples
        text = scu_log.read_text(errors="replace")
        result.sent_ok = len(_SUCCESS.findall(text))
        pdv = _PDV.search(text)
        result.max_send_pdv = pdv.group(1) if pdv else "?"
        result.received = receiver.received()
        if not result.error and (rc != 0 or result.sent_ok != len(push.files)):
            result.error = (
                f"storescu exit {rc}, {result.sent_ok}/{len(push.files)} stored with Success\n"
                f"  storescu log tail:\n{tail(scu_log, 8)}\n"
                f"  {receiver.name} log tail:\n{tail(receiver.log_path)}"
            )
        if receiver.proc.poll() is not None and not result.error:
            result.error = f"{receiver.name} exited during the push ({receiver.proc.returncode})"
    finally:
        receiver.stop()
    return result


# --------------------------------------------------------------------------- reporting


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


@dataclass
class Figures:
    """Best and median over the successful runs of one receiver."""

    name: str
    description: str
    runs: list[RunResult] = field(default_factory=list)

    def _rates(self, nbytes: int, n: int) -> tuple[list[float], list[float]]:
        good = [r for r in self.runs if r.ok and r.seconds > 0]
        return [n / r.seconds for r in good], [nbytes / MB / r.seconds for r in good]

    def ips(self, nbytes: int, n: int) -> tuple[float | None, float | None]:
        """(best, median) instances/s."""
        ips, _ = self._rates(nbytes, n)
        return (max(ips), statistics.median(ips)) if ips else (None, None)

    def mbps(self, nbytes: int, n: int) -> tuple[float | None, float | None]:
        """(best, median) MB/s."""
        _, mbs = self._rates(nbytes, n)
        return (max(mbs), statistics.median(mbs)) if mbs else (None, None)

    def cpu_ms_per_instance(self, n: int) -> float | None:
        """Median receiver CPU time (user + system, whole process tree) per instance, ms."""
        cpu = [r.cpu_seconds for r in self.runs if r.ok]
        return statistics.median(cpu) * 1000 / n if cpu else None

    def peak_rss_mb(self) -> float | None:
        """Highest peak RSS over the successful runs, MiB."""
        peaks = [r.peak_rss_bytes for r in self.runs if r.ok]
        return max(peaks) / MIB if peaks else None


def machine_info() -> list[tuple[str, str]]:
    """What the figures were measured on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / (1 << 30)
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0

    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unavailable ({exc.__class__.__name__})"
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if lines else "?"

    def pkg(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    try:
        described = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        git = described.stdout.strip() if described.returncode == 0 else "no commit yet"
    except (OSError, subprocess.TimeoutExpired):
        git = "unknown"
    orthanc = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    return [
        ("time", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
        ("host", f"{platform.node()}  {platform.system()} {platform.release()}"),
        ("cpu", f"{cpu}; nproc {affinity} (os.cpu_count {os.cpu_count()})"),
        ("memory", f"{mem:.1f} GiB"),
        ("python", platform.python_version()),
        ("storescu", first_line([find_dcmtk("storescu"), "--version"])),
        ("Orthanc", first_line([orthanc, "--version"]) if Path(orthanc).exists() else "absent"),
        ("pynetdicom", pkg("pynetdicom")),
        ("pydicom", pkg("pydicom")),
        ("ztbridge", f"{pkg('ztbridge')} (git {git})"),
    ]


def print_header(title: str) -> None:
    """Print the title and the machine block."""
    print(f"\n=== {title} ===")
    for k, v in machine_info():
        print(f"  {k:<11} {v}")
    sys.stdout.flush()


def ratio_line(
    label: str,
    num: tuple[float | None, float | None],
    den: tuple[float | None, float | None],
    bar: float,
) -> str:
    """``label: best x.xx, median x.xx (bar >= y.yy: reached/below)``."""
    parts = []
    verdicts = []
    for kind, a, b in (("best", num[0], den[0]), ("median", num[1], den[1])):
        if a is None or b is None or b == 0:
            parts.append(f"{kind} —")
            continue
        r = a / b
        parts.append(f"{kind} {r:.2f}")
        verdicts.append(f"{kind} {'reached' if r >= bar else 'below'}")
    verdict = "; ".join(verdicts) if verdicts else "not measurable"
    return f"  {label:<24} {', '.join(parts):<26} bar >= {bar:.2f}: {verdict}"


def print_summary(figs: dict[str, Figures], n: int, nbytes: int, repeat: int) -> None:
    """The summary table, the ratios against the bar, and any failures."""
    print(f"\n=== summary: {n} instances, {nbytes / MB:.1f} MB per push, {repeat} run(s) each ===")
    head = (
        f"  {'receiver':<11} {'ok':>5} {'inst/s best':>12} {'inst/s med':>11} "
        f"{'MB/s best':>10} {'MB/s med':>9} {'s best':>7} {'CPU ms/inst':>12} "
        f"{'peak RSS MiB':>13} {'PDV':>6}  what"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name in RECEIVER_NAMES:
        f = figs.get(name)
        if f is None:
            continue
        ok = sum(r.ok for r in f.runs)
        ib, im = f.ips(nbytes, n)
        mb, mm = f.mbps(nbytes, n)
        secs = min((r.seconds for r in f.runs if r.ok), default=None)
        pdv = next((r.max_send_pdv for r in f.runs if r.ok), "")
        print(
            f"  {name:<11} {f'{ok}/{len(f.runs)}':>5} {_fmt(ib):>12} {_fmt(im):>11} "
            f"{_fmt(mb):>10} {_fmt(mm):>9} {_fmt(secs, '.2f'):>7} "
            f"{_fmt(f.cpu_ms_per_instance(n), '.2f'):>12} "
            f"{_fmt(f.peak_rss_mb(), '.0f'):>13} {pdv:>6}  {f.description}"
        )
    print(
        "  (CPU ms/inst: receiver's process-tree CPU, median run; less noisy than wall time on\n"
        "   a busy VM. PDV: max send PDV storescu negotiated with that receiver, bytes)"
    )
    print("\n  bar (instances/s)")
    zt = figs.get("ztbridge")
    bare = figs.get("pynetdicom")
    orth = figs.get("orthanc")
    if zt is None:
        print("  ztbridge not measured (not in --receivers)")
    else:
        z = zt.ips(nbytes, n)
        if bare is not None:
            print(ratio_line("ztbridge / pynetdicom", z, bare.ips(nbytes, n), BAR_VS_BARE))
        if orth is not None:
            print(ratio_line("ztbridge / Orthanc", z, orth.ips(nbytes, n), BAR_VS_ORTHANC))
    errors = [r for f in figs.values() for r in f.runs if r.error]
    if errors:
        print("\n  problems")
        for r in errors:
            print(f"  - {r.receiver} run {r.run}: {r.error}")


# --------------------------------------------------------------------------- main


def generate(out_dir: Path, count: int, large_bytes: int | None = None) -> list[Path]:
    """Write the series (or the large study) once; return its files."""
    from tests.support.dicomgen import make_ct_series, make_large_study

    t0 = time.perf_counter()
    if large_bytes is None:
        series = make_ct_series(out_dir, count)
    else:
        series = make_large_study(out_dir, large_bytes)
    print(
        f"  generated {len(series.files)} instances in {time.perf_counter() - t0:.1f} s "
        f"into {out_dir}",
        flush=True,
    )
    return series.files


def make_push(files: list[Path], args: argparse.Namespace) -> Push:
    """storescu invocation shared by every receiver."""
    return Push(
        files=files,
        total_bytes=sum(p.stat().st_size for p in files),
        storescu=find_dcmtk("storescu"),
        # -v: one "Received Store Response (Success)" line per instance, which is how every
        # receiver's successes are counted (cost is identical for all).
        # -nh is deliberately absent: storescu halts on the first failed store.
        options=["-v", "-aet", CALLING_AE],
        env={"TCP_NODELAY": str(args.dcmtk_tcp_nodelay)},
        timeout=args.timeout,
    )


def run_ingest(args: argparse.Namespace, work: Path) -> None:
    """Throughput benchmark over the selected receivers."""
    names = [n.strip() for n in args.receivers.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECEIVER_CLASSES]
    if unknown:
        raise SystemExit(f"unknown receiver(s) {unknown}; choose from {list(RECEIVER_NAMES)}")
    print_header("ztbridge ingest benchmark")
    files = generate(work / "series", args.count)
    push = make_push(files, args)
    dcmtk_env = {"TCP_NODELAY": str(args.dcmtk_tcp_nodelay)}
    print(f"  push        {push.shown()}")
    print(f"  series      {len(files)} x 512x512x16-bit CT, {push.total_bytes / MB:.1f} MB")
    print(
        f"  transport   TCP_NODELAY={args.dcmtk_tcp_nodelay} in the environment of storescu, "
        "storescp and Orthanc (DCMTK reads it); bare pynetdicom SCP and ztbridge set "
        "TCP_NODELAY themselves"
    )
    pdu = f"{args.max_pdu} bytes for every receiver" if args.max_pdu else "receiver defaults"
    print(f"  max PDU     {pdu} (storescu sends at most {DCMTK_MAX_PDU})")
    print(f"  order       {', '.join(names)} (interleaved, {args.repeat} round(s))\n", flush=True)

    receivers = {n: RECEIVER_CLASSES[n](work, dcmtk_env, args.max_pdu) for n in names}
    bare = receivers.get("pynetdicom")
    if args.bare_fsync and isinstance(bare, BarePynetdicomReceiver):
        bare.enable_fsync()
    figs = {n: Figures(n, receivers[n].description) for n in names}
    dead: set[str] = set()
    for run in range(1, args.repeat + 1):
        for name in names:
            if name in dead:
                continue
            run_dir = work / f"{name}-run{run}"
            r = push_once(receivers[name], push, run, run_dir)
            figs[name].runs.append(r)
            if r.ok:
                print(
                    f"  run {run} {name:<11} {r.seconds:7.2f} s  "
                    f"{len(files) / r.seconds:8.1f} inst/s  "
                    f"{push.total_bytes / MB / r.seconds:7.1f} MB/s  "
                    f"CPU {r.cpu_seconds * 1000 / len(files):5.2f} ms/inst  "
                    f"peak RSS {r.peak_rss_bytes / MIB:4.0f} MiB  "
                    f"received {'—' if r.received is None else r.received}",
                    flush=True,
                )
            else:
                first = r.error.splitlines()[0]
                print(f"  run {run} {name:<11} FAILED: {first}", flush=True)
                if "failed to start" in r.error:
                    dead.add(name)  # it will not start next round either
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
    print_summary(figs, len(files), push.total_bytes, args.repeat)


def run_memory(args: argparse.Namespace, work: Path) -> None:
    """Push a large study to ztbridge only and report its process tree's peak RSS."""
    print_header(f"ztbridge memory benchmark: ~{args.memory_study_gb:g} GiB study")
    files = generate(work / "study", 0, large_bytes=int(args.memory_study_gb * (1 << 30)))
    push = make_push(files, args)
    print(f"  push        {push.shown()}")
    print(f"  study       {len(files)} instances, {push.total_bytes / MB:.1f} MB", flush=True)
    receiver = ZtbridgeReceiver(work, {"TCP_NODELAY": str(args.dcmtk_tcp_nodelay)}, args.max_pdu)
    r = push_once(receiver, push, 1, work / "ztbridge-memory", settle=60.0)
    print(f"\n=== memory: {len(files)} instances, {push.total_bytes / MB:.0f} MB ===")
    if not r.ok:
        print(f"  {r.error}")
        return
    peak = r.peak_rss_bytes / MB
    print(
        f"  push time        {r.seconds:.1f} s ({len(files) / r.seconds:.1f} inst/s, "
        f"{push.total_bytes / MB / r.seconds:.1f} MB/s)"
    )
    print(
        f"  RSS (tree)       idle before the push {r.idle_rss_bytes / MB:.0f} MB, "
        f"peak {peak:.0f} MB ({r.peak_rss_bytes / MIB:.0f} MiB); "
        f"{r.rss_samples} samples, every 50 ms"
    )
    verdict = "within" if peak <= BAR_RSS_MB else "above"
    print(
        f"  bar              peak <= {BAR_RSS_MB:.0f} MB: {verdict} ({peak / BAR_RSS_MB:.2f} of it)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Ingest benchmark: storescu -> ztbridge, storescp, pynetdicom, Orthanc.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--count", type=int, default=300, help="instances in the CT series")
    p.add_argument("--repeat", type=int, default=2, help="pushes per receiver")
    p.add_argument(
        "--receivers",
        default=",".join(RECEIVER_NAMES),
        help=f"comma-separated subset of {','.join(RECEIVER_NAMES)}",
    )
    p.add_argument(
        "--memory-study-gb",
        type=float,
        default=0.0,
        metavar="GIB",
        help="memory mode: push a study of this many GiB to ztbridge only, report peak RSS",
    )
    p.add_argument(
        "--dcmtk-tcp-nodelay",
        type=int,
        choices=(0, 1),
        default=1,
        help="TCP_NODELAY env for storescu/storescp/Orthanc (DCMTK default is 0 = Nagle on)",
    )
    p.add_argument(
        "--max-pdu",
        type=int,
        default=DCMTK_MAX_PDU,
        help="max PDU every receiver accepts (storescp -pdu, bare SCP, Orthanc "
        "MaximumPduLength, ZTBRIDGE_DICOM__MAX_PDU_LENGTH), so all get the same transport; "
        "0 = each receiver's own default",
    )
    p.add_argument(
        "--bare-fsync",
        action="store_true",
        help="the bare pynetdicom SCP fsyncs every file before answering (durable baseline)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="per push, seconds")
    p.add_argument("--workdir", type=Path, default=None, help="parent of the temp dir")
    p.add_argument("--keep", action="store_true", help="keep generated and received data")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; always returns 0 unless the bench itself cannot run."""
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ztbridge-bench-", dir=args.workdir))
    try:
        if args.memory_study_gb > 0:
            run_memory(args, work)
        else:
            run_ingest(args, work)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"\n  data kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
