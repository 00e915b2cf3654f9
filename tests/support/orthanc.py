"""Orthanc with its DICOMweb plugin, the reference DICOMweb server of the tests.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages: the ``Orthanc`` binary started on a
generated JSON configuration with free HTTP and DICOM ports, its own storage folder, the
DICOMweb plugin at ``/dicom-web/``, no authentication and HTTP reachable from loopback only
(``RemoteAccessAllowed: false``). It accepts C-STORE from any calling AE title, so the same
``storescu`` push that feeds ztbridge feeds it too. ``running_orthanc`` waits until the REST
API answers and always stops the process (SIGTERM, then SIGKILL) at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.gateway_proc import free_port
from tests.support.node import missing_peer

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
)
AE_TITLE = "ORTHANC"


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: where its REST API, DICOMweb root and DICOM port are."""

    http_port: int
    dicom_port: int
    folder: Path
    log_path: Path

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb plugin's root (no trailing slash, as dicomweb-client wants it)."""
        return f"{self.url}/dicom-web"

    def log(self) -> str:
        """What Orthanc logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get_json(self, path: str) -> object:
        """GET a REST path (``/studies``, ``/system``...) as JSON."""
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as r:
            return json.loads(r.read())


def _plugin() -> Path:
    for p in PLUGIN_CANDIDATES:
        if p.exists():
            return p
    missing_peer("Orthanc's DICOMweb plugin not installed: install Debian's orthanc-dicomweb")
    raise AssertionError("unreachable")


def orthanc_config(folder: Path, http_port: int, dicom_port: int) -> dict[str, object]:
    """The JSON configuration: everything in ``folder``, loopback HTTP, no auth."""
    return {
        "Name": "ztbridge-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "StorageCompression": False,
        "HttpPort": http_port,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": AE_TITLE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DefaultEncoding": "Utf8",
        "Plugins": [str(_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
    }


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/system", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_orthanc(folder: Path, timeout: float = 120.0) -> Iterator[Orthanc]:
    """Start Orthanc in ``folder`` on free ports, yield it once its REST API answers, stop it.

    The DICOMweb plugin must have registered too: ``/dicom-web/studies`` answering is the
    readiness check (a plain Orthanc without the plugin would 404 there)."""
    if shutil.which(ORTHANC) is None:
        missing_peer("Orthanc not installed: install Debian's orthanc and orthanc-dicomweb")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "storage").mkdir(exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, http_port, dicom_port), indent=2))
    log_path = folder / "orthanc.log"
    orthanc = Orthanc(http_port, dicom_port, folder, log_path)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [ORTHANC, str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    try:
        deadline = time.monotonic() + timeout
        while not _ready(orthanc.url) or not _dicomweb_ready(orthanc.dicomweb_url):
            if proc.poll() is not None:
                raise AssertionError(f"Orthanc exited early ({proc.returncode}):\n{orthanc.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Orthanc did not answer on {http_port}:\n{orthanc.log()}")
            time.sleep(0.2)
        yield orthanc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _dicomweb_ready(root: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root}/studies", timeout=2) as r:
            return r.status in (200, 204)
    except (urllib.error.URLError, OSError):
        return False
