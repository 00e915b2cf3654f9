"""Run ``ztbridge`` as a real process, the way an operator would, for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ZTBRIDGE = str(Path(sys.executable).with_name("ztbridge"))
PASSPHRASE = "integration-test-passphrase"


_HANDED_OUT: set[int] = set()


def _worker_share() -> tuple[int, int]:
    """(this pytest-xdist worker's number, how many workers); (0, 1) in a plain run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return int(worker[2:]), int(count)
    return 0, 1


def free_port() -> int:
    """A TCP port nobody listens on right now, and never one this test run handed out
    before: the kernel may offer a port again once its first taker has closed the probe
    socket and not yet bound it (a gateway gets three ports, then runs CLI commands for
    seconds before ``up`` binds them). Under pytest-xdist the ports are dealt out in blocks of
    16, each worker taking only its own blocks ((port // 16) % workers), so two workers never
    hand out the same one. (Not port % workers: Linux hands bind() even ports by preference.)"""
    worker, workers = _worker_share()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT and (port // 16) % workers == worker:
            _HANDED_OUT.add(port)
            return port


@dataclass
class GatewayProcess:
    """A ztbridge home and, while running, its ``ztbridge up`` process."""

    home: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a ``ztbridge`` subcommand against this home."""
        result = subprocess.run(
            [ZTBRIDGE, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"ztbridge {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def start(self, timeout: float = 120.0) -> None:
        """Start ``ztbridge up`` and wait until the DICOM port accepts connections and the
        log says this process is the one listening there (not another test's gateway that
        happened to get the same free port). The deadline is generous for loaded machines:
        it returns as soon as the gateway is up."""
        self.log_path = self.home.parent / f"{self.home.name}-up.log"
        log = self.log_path.open("ab")
        since = log.tell()  # the log is appended to across restarts: read only this run's
        self.proc = subprocess.Popen(
            [ZTBRIDGE, "up"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ztbridge up exited early:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
                if f":{self.port}, AE title".encode() in self.log_path.read_bytes()[since:]:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"ztbridge did not listen on {self.port}:\n{self.log()}")

    def stop(self, timeout: float = 120.0) -> int:
        """SIGTERM and wait; returns the exit code. A gateway that does not exit in time is
        killed (so it cannot outlive the test) and the failure shows its log."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
            raise AssertionError(
                f"ztbridge did not exit within {timeout:.0f} s of SIGTERM:\n{self.log()[-5000:]}"
            ) from None

    def kill9(self) -> None:
        """SIGKILL: the crash case."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)
        self.proc = None

    def log(self) -> str:
        """What ``ztbridge up`` printed."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""


def make_gateway(tmp: Path, name: str = "zt", **extra_env: str) -> GatewayProcess:
    """A fresh home with its own port; nothing started yet."""
    port = free_port()
    env = {
        **os.environ,
        "ZTBRIDGE_HOME": str(tmp / name),
        "ZTBRIDGE_DICOM__PORT": str(port),
        "ZTBRIDGE_DICOM__HOST": "127.0.0.1",
        # Every gateway gets its own ports: the portal starts by itself once a CA exists.
        "ZTBRIDGE_PORTAL__HOST": "127.0.0.1",
        "ZTBRIDGE_PORTAL__PORT": str(free_port()),
        "ZTBRIDGE_TLS__PORT": str(free_port()),
        "ZTBRIDGE_CUSTODIAN_PASSPHRASE": PASSPHRASE,
        # rich wraps the CLI's output at 80 columns off a terminal and folds a word longer
        # than a line: a tmp path (longer under pytest-xdist, .../popen-gw0/...) would be cut
        # in two where tests look for it whole.
        "COLUMNS": "200",
        **extra_env,
    }
    env.pop("ZTBRIDGE_CONFIG", None)
    return GatewayProcess(tmp / name, port, env)


def logged(g: GatewayProcess, text: str, timeout: float = 60) -> bool:
    """Whether ``text`` appears in the gateway's log, waiting for it: threads log it, and a
    loaded machine may take a while."""
    deadline = time.monotonic() + timeout
    while text not in g.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@contextmanager
def running(gw: GatewayProcess) -> Iterator[GatewayProcess]:
    """Start, yield, always stop."""
    gw.start()
    try:
        yield gw
    finally:
        if gw.proc is not None:
            gw.stop()


def dcmtk(tool: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; output captured as text."""
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout)


def storescu(
    port: int,
    files: Sequence[Path | str],
    calling: str = "STORESCU",
    called: str = "ZTBRIDGE",
    *extra: str,
) -> subprocess.CompletedProcess[str]:
    """Push files over one association, like a modality."""
    return dcmtk(
        "storescu",
        "-aet",
        calling,
        "-aec",
        called,
        *extra,
        "127.0.0.1",
        str(port),
        *[str(f) for f in files],
    )
