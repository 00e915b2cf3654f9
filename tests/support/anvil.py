"""anvil (Foundry's dev node, pinned from npm) as a real JSON-RPC peer for tests and benches.

Its binary ships in the platform package ``@foundry-rs/anvil-<os>-<arch>/bin/anvil`` installed by
``npm ci --prefix tests/ledger/anvil`` (``make test`` does it).
"""

from __future__ import annotations

import platform
import signal
import subprocess
import time
from pathlib import Path

import psutil

from tests.support.gateway_proc import free_port

ANVIL_DIR = Path(__file__).resolve().parents[1] / "ledger" / "anvil"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_OS = {"Linux": "linux", "Darwin": "darwin"}
ANVIL_BIN = (
    ANVIL_DIR
    / "node_modules"
    / "@foundry-rs"
    / f"anvil-{_OS.get(platform.system(), 'unknown')}-{_ARCH.get(platform.machine(), 'unknown')}"
    / "bin"
    / "anvil"
)
#: anvil's first well-known dev account (mnemonic "test test … junk"), pre-funded by anvil.
ANVIL_FUNDER = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


class Anvil:
    """An anvil process on a loopback port (a free one unless given), its state in ``state``.

    ``--state FILE`` loads the chain from FILE at start and writes it back on exit, so a
    stopped and restarted anvil carries on with the same blocks, hashes and contracts.
    """

    def __init__(self, state: Path, port: int | None = None) -> None:
        self.state = state
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(ANVIL_BIN),
                *("--host", "127.0.0.1", "--port", str(self.port)),
                *("--state", str(state), "--silent"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60  # returns as soon as it listens
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"anvil exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            if self._listening():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("anvil did not start within 60 s")

    def _listening(self) -> bool:
        """Whether THIS process listens on the port (a connect could reach another one)."""
        try:
            conns = psutil.Process(self.proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            return False
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in conns)

    def stop(self) -> None:
        """SIGINT, so anvil dumps its state on the way out."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)  # a kill would lose the state dump
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def restart(self) -> Anvil:
        """A new anvil on the same port and state file (the old one must be stopped)."""
        return Anvil(self.state, self.port)
