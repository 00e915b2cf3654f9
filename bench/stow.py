"""STOW-RS benchmark: one CT series stored with dicomweb-client into ``ztbridge up`` and into
Orthanc's DICOMweb plugin, and into ztbridge with storescu (C-STORE) for comparison.

Prints figures, never pass/fail. For each: wall seconds, instances/s and MB/s of DICOM
sent; for ztbridge the gateway process's RSS before and at its peak (sampled every 50 ms),
which shows whether a STOW request's parts are held in memory (they are spooled, encrypted,
one unnamed file per request: ``gateway/spool.py``). ``--per-request`` instances go in each
STOW request (dicomweb-client sends a body over 1 MB chunked).

    .venv/bin/python bench/stow.py --count 200 --size 512 --per-request 50

On the shared 2-core machine (noisy; 100 instances of 512x512, 52.5 MB):

| | 25 per request | 100 per request |
|---|---|---|
| ztbridge STOW-RS (HTTPS) | 78 inst/s, 41 MB/s | 108 inst/s, 57 MB/s, RSS 176 -> 184 MB |
| ztbridge C-STORE (storescu) | 76 inst/s, 40 MB/s | 139 inst/s, 73 MB/s |
| Orthanc STOW-RS (plain HTTP) | 134 inst/s, 70 MB/s | 113 inst/s, 59 MB/s |

(the 25-per-request run was before parts shared one spool file: each part under 1 MiB then
stayed in memory, RSS 176 -> 195 MB.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Peak:
    """Samples a process's RSS on a thread until stopped."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.start = self.peak = int(self._proc.memory_info().rss)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, int(self._proc.memory_info().rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    import pydicom
    import pyotp
    import requests
    from dicomweb_client.api import DICOMwebClient

    from tests.support.dicomgen import make_ct_series
    from tests.support.gateway_proc import free_port, make_gateway, storescu
    from tests.support.orthanc import running_orthanc
    from tests.support.tls import self_signed

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--per-request", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ztbridge-bench-stow-") as tmp:
        root = Path(tmp)
        series = make_ct_series(root / "stow", args.count, rows=args.size, columns=args.size)
        again = make_ct_series(root / "cstore", args.count, rows=args.size, columns=args.size)
        datasets = [pydicom.dcmread(f) for f in series.files]
        mb = sum(f.stat().st_size for f in series.files) / 1e6
        batches = [
            datasets[i : i + args.per_request] for i in range(0, len(datasets), args.per_request)
        ]
        cert, key = self_signed(root)
        port = free_port()
        gw = make_gateway(
            root,
            ZTBRIDGE_PORTAL__PORT=str(port),
            ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
            ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
            ZTBRIDGE_ACCOUNTS__ARGON2_MEMORY_KIB="8",
            ZTBRIDGE_ACCOUNTS__ARGON2_TIME_COST="1",
            ZTBRIDGE_ACCOUNTS__ARGON2_PARALLELISM="1",
        )
        gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
        (root / "pw").write_text("bench tech rides the tram\n")
        gw.cli(
            "user", "add", "--username", "tess", "--role", "technologist", "--name", "Tess",
            "--password-file", str(root / "pw"), "--totp-secret-file", str(root / "totp"),
        )  # fmt: skip
        rows = []
        with running_orthanc(root / "orthanc") as orthanc:
            gw.start()
            try:
                s = requests.Session()
                s.trust_env = False
                s.verify = str(cert)
                r = s.post(
                    f"https://127.0.0.1:{port}/api/token",
                    json={
                        "username": "tess",
                        "password": "bench tech rides the tram",
                        "totp": pyotp.TOTP((root / "totp").read_text().strip()).now(),
                    },
                    timeout=60,
                )
                r.raise_for_status()
                client = DICOMwebClient(
                    f"https://127.0.0.1:{port}/dicom-web",
                    session=s,
                    headers={"Authorization": f"Bearer {r.json()['access_token']}"},
                )
                assert gw.proc is not None
                peak = Peak(gw.proc.pid)
                t0 = time.perf_counter()
                for batch in batches:
                    client.store_instances(batch)
                stow_s = time.perf_counter() - t0
                peak.stop()
                rows.append(("ztbridge STOW-RS (HTTPS)", stow_s, peak.start, peak.peak))

                peak = Peak(gw.proc.pid)
                t0 = time.perf_counter()
                done = storescu(gw.port, list(again.files))
                cstore_s = time.perf_counter() - t0
                peak.stop()
                assert done.returncode == 0, done.stdout + done.stderr
                rows.append(("ztbridge C-STORE (storescu)", cstore_s, peak.start, peak.peak))
            finally:
                gw.stop()
            o = requests.Session()
            o.trust_env = False
            oc = DICOMwebClient(orthanc.dicomweb_url, session=o)
            t0 = time.perf_counter()
            for batch in batches:
                oc.store_instances(batch)
            rows.append(("Orthanc STOW-RS (HTTP)", time.perf_counter() - t0, 0, 0))
    print(
        f"{args.count} CT instances {args.size}x{args.size} ({mb:.1f} MB),"
        f" {args.per_request} per STOW request"
    )
    print(f"{'':30} {'s':>7} {'inst/s':>8} {'MB/s':>7} {'RSS MB':>15}")
    for name, secs, start, top in rows:
        rss = f"{start / 1e6:.0f} -> {top / 1e6:.0f}" if start else "-"
        print(f"{name:30} {secs:7.2f} {args.count / secs:8.1f} {mb / secs:7.1f} {rss:>15}")


if __name__ == "__main__":
    main()
