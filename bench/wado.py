"""WADO-RS benchmark: ztbridge against Orthanc's DICOMweb plugin on the same study.

Prints figures and checks the issue's bars (MB/s and frames/s at least Orthanc's, first
byte under 100 ms, gateway memory flat); never a test. One run: a real ``ztbridge up``
(HTTPS, embedded ledger) and Orthanc with its DICOMweb plugin on free loopback ports, both
fed the same ``--count`` CT slices (512x512, 16-bit) by the same storescu. Then, for each
server:

* WADO-RS whole study (multipart, as stored): time to first byte and MB/s;
* ``/metadata`` of the study;
* a frame loop like OHIF's: every instance's frame 1, ``--parallel`` requests at a time;
* rendered (JPEG) and thumbnail of one instance (median of 5);
* ztbridge's RSS before and after (memory must not grow with the study).

Run::

    .venv/bin/python bench/wado.py              # 300 instances
    .venv/bin/python bench/wado.py --count 50   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import pyotp
import requests

from tests.dicomweb.conftest import CHEAP_ENV, _provision, _settle
from tests.support.dicomgen import make_ct_series
from tests.support.gateway_proc import free_port, make_gateway, storescu
from tests.support.orthanc import AE_TITLE, running_orthanc
from tests.support.tls import self_signed

MULTIPART = 'multipart/related; type="application/dicom"; transfer-syntax=*'
FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def whole_study(s: requests.Session, url: str) -> tuple[float, float, int]:
    """(first byte s, MB/s, bytes) of one streamed study retrieve."""
    start = time.perf_counter()
    first = None
    total = 0
    with s.get(url, headers={"Accept": MULTIPART}, stream=True, timeout=600) as r:
        r.raise_for_status()
        for chunk in r.iter_content(1 << 16):
            if first is None:
                first = time.perf_counter() - start
            total += len(chunk)
    took = time.perf_counter() - start
    return first or took, total / took / 1e6, total


def frame_loop(s: requests.Session, urls: list[str], parallel: int) -> float:
    """Frames per second fetching ``urls`` with ``parallel`` requests in flight."""

    def one(u: str) -> int:
        r = s.get(u, headers={"Accept": FRAMES}, timeout=120)
        r.raise_for_status()
        return len(r.content)

    start = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, urls))
    return len(urls) / (time.perf_counter() - start)


def median_ms(s: requests.Session, url: str, accept: str, n: int = 5) -> float | None:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        r = s.get(url, headers={"Accept": accept}, timeout=120)
        if r.status_code != 200:
            return None
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wado-") as d:
        tmp = Path(d)
        cert, key = self_signed(tmp)
        port = free_port()
        base = f"https://127.0.0.1:{port}"
        gw = make_gateway(
            tmp,
            ZTBRIDGE_PORTAL__PORT=str(port),
            ZTBRIDGE_PORTAL__TLS_CERT_FILE=str(cert),
            ZTBRIDGE_PORTAL__TLS_KEY_FILE=str(key),
            ZTBRIDGE_ACCOUNTS__PUBLIC_URL=base,
            ZTBRIDGE_LEDGER__POLL_SECONDS="0.2",
            ZTBRIDGE_SESSIONS__ACCESS_TOKEN_MINUTES="60",
            **CHEAP_ENV,
        )
        gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
        secrets = tmp / "secrets"
        secrets.mkdir()
        pat = _provision(gw, secrets, "pat", "patient")
        gw.cli("patient", "link", "--username", "pat", "--patient-id", "BENCH-WADO-1")
        series = make_ct_series(tmp / "ct", args.count, patient_id="BENCH-WADO-1")
        with running_orthanc(tmp / "orthanc") as orthanc:
            gw.start()
            try:
                for target, ae in ((gw.port, None), (orthanc.dicom_port, AE_TITLE)):
                    extra = () if ae is None else ("STORESCU", ae)
                    done = storescu(target, series.files, *extra)
                    assert done.returncode == 0, done.stdout + done.stderr
                _settle(gw)
                zt = requests.Session()
                zt.trust_env = False
                zt.verify = str(cert)
                r = zt.post(
                    f"{base}/api/token",
                    json={
                        "username": "pat",
                        "password": pat.password,
                        "totp": pyotp.TOTP(pat.totp_secret).now(),
                    },
                    timeout=60,
                )
                r.raise_for_status()
                zt.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
                orth = requests.Session()
                orth.trust_env = False
                assert gw.proc is not None
                proc = psutil.Process(gw.proc.pid)
                rss_before = proc.memory_info().rss
                roots = {
                    "ztbridge": (zt, f"{base}/dicom-web"),
                    "orthanc": (orth, orthanc.dicomweb_url),
                }
                meta = zt.get(f"{base}/dicom-web/studies/{series.study_uid}/metadata", timeout=120)
                sops = [m["00080018"]["Value"][0] for m in meta.json()]
                figures: dict[str, dict[str, float | None]] = {}
                for name, (s, root) in roots.items():
                    study = f"{root}/studies/{series.study_uid}"
                    inst = f"{study}/series/{series.series_uid}/instances"
                    whole_study(s, study)  # warm both (file caches, keys)
                    first, mbs, total = whole_study(s, study)
                    start = time.perf_counter()
                    s.get(study + "/metadata", timeout=120).raise_for_status()
                    meta_ms = (time.perf_counter() - start) * 1000
                    fps = frame_loop(s, [f"{inst}/{u}/frames/1" for u in sops], args.parallel)
                    one = f"{inst}/{sops[len(sops) // 2]}"
                    figures[name] = {
                        "first_byte_ms": first * 1000,
                        "mb_s": mbs,
                        "mb": total / 1e6,
                        "metadata_ms": meta_ms,
                        "frames_s": fps,
                        "rendered_ms": median_ms(s, one + "/rendered", "image/jpeg"),
                        "thumbnail_ms": median_ms(s, one + "/thumbnail", "image/jpeg"),
                    }
                rss_after = proc.memory_info().rss
            finally:
                gw.stop()
    print(f"WADO-RS, {args.count} CT instances 512x512, {args.parallel} parallel frame requests")
    print(f"{'':22}{'ztbridge':>12}{'orthanc':>12}")
    for key in ("first_byte_ms", "mb_s", "mb", "metadata_ms", "frames_s", "rendered_ms",
                "thumbnail_ms"):  # fmt: skip
        row = [figures[n][key] for n in ("ztbridge", "orthanc")]
        print(
            f"{key:22}" + "".join(f"{v:>12.1f}" if v is not None else f"{'n/a':>12}" for v in row)
        )
    print(f"gateway RSS: {rss_before / 2**20:.0f} MiB before, {rss_after / 2**20:.0f} MiB after")
    z, o = figures["ztbridge"], figures["orthanc"]
    bars = {
        "MB/s at least Orthanc's": (z["mb_s"] or 0) >= (o["mb_s"] or 0),
        "frames/s at least Orthanc's": (z["frames_s"] or 0) >= (o["frames_s"] or 0),
        "first byte < 100 ms": (z["first_byte_ms"] or 1e9) < 100,
        "RSS growth < 64 MiB": rss_after - rss_before < 64 << 20,
    }
    for bar, ok in bars.items():
        print(f"{'MET ' if ok else 'MISS'} {bar}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
