"""Benchmark: a patient's ZIP download through the real portal, against the floor.

Prints figures and checks the issue's bars (PASS/MISS), never a test. One run:

1. a fresh home; a patient account provisioned (``user add --password-file``, default
   argon2id parameters) and linked to a Patient ID; ``ztbridge up`` as a process (HTTPS with
   its self-signed certificate, the embedded chain);
2. storescu pushes, for that patient, a ``--count`` (300) slice 512x512 16-bit CT study, a
   ``--small`` (30) slice one, and tiny one-slice studies up to ``--studies`` (1000) in all;
   the anchors are awaited, so the worker is idle while figures are taken;
3. login-to-study-list: ``POST /api/token`` (password + TOTP), then ``GET /api/studies``
   (the whole list, 1000 studies);
4. the ZIP download of each CT study over HTTPS (httpx, the certificate pinned): time to
   first byte of the body from sending the request, MB/s (10^6 bytes of ZIP a second, wall),
   and the gateway's RSS high-water mark during it (``/proc/PID/clear_refs`` reset before);
5. ``ztbridge export`` of the big study (process wall time, start-up and custodian unlock
   included), while ``up`` still runs;
6. the floor, after ``up`` stopped: a plain read of the same ciphertext from the store plus
   decryption (``bench/retrieve_core.py``'s child: ``store.get`` + ``open_sealed`` per
   instance, in a fresh process).

Bars: ZIP MB/s >= 0.8 x floor MB/s; first byte < 200 ms; RSS flat in the study's size (the
big study's download raises the peak by less than a tenth of the size difference between
the two studies over the small one's). The store is in the page cache (just written): CPU
figures. The machine may be shared: figures are indicative.

    .venv/bin/python bench/retrieve.py [--count 300] [--small 30] [--studies 1000] [--dir P]
"""

from __future__ import annotations

import argparse
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import pyotp  # noqa: E402

from tests.support.dicomgen import make_ct_series  # noqa: E402
from tests.support.gateway_proc import GatewayProcess, make_gateway, storescu  # noqa: E402
from tests.support.ledger import outbox  # noqa: E402

PASSWORD = "bench retrieve password 2026"
PATIENT_ID = "BENCHPAT0001"
FLOOR_PASSPHRASE = "bench-retrieve-passphrase"  # bench/retrieve_core.py's custodian passphrase


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _push(gw: GatewayProcess, files: list[Path]) -> None:
    for start in range(0, len(files), 500):  # one association per 500 files
        r = storescu(gw.port, files[start : start + 500])
        if r.returncode != 0:
            raise SystemExit(f"storescu failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")


def _wait_anchored(gw: GatewayProcess, batches_at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = outbox(gw)
        if (
            state.get("anchored", 0) >= batches_at_least
            and state.get("pending", 0) == 0
            and state["unbatched"] == 0
        ):
            return
        time.sleep(0.5)
    print(f"warning: anchoring not settled after {timeout:.0f} s: {outbox(gw)}")


def _download(
    client: httpx.Client, token: str, uid: str, pid: int, cafile: Path
) -> tuple[float, float, int, int]:
    """(TTFB s, wall s, ZIP bytes, RSS peak rise in KB) of one download: with curl when it
    is installed (a C client: the figure is the server's, not a Python client's), else
    httpx. TTFB counts from the request sent (after the TLS handshake) to the first byte of
    the body."""
    base = _kb(pid, "VmRSS")
    reset = _reset_peak(pid)
    if shutil.which("curl"):
        r = subprocess.run(
            [
                "curl", "-sS", "--fail", "--cacert", str(cafile), "-o", "/dev/null",
                "-H", f"Authorization: Bearer {token}",
                "-w", "%{time_pretransfer} %{time_starttransfer} %{time_total} %{size_download}",
                str(client.base_url).rstrip("/") + f"/api/studies/{uid}/archive",
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if r.returncode != 0:
            raise SystemExit(f"curl: {r.returncode} {r.stderr}")
        pre, first_at, total_at, size = r.stdout.split()
        ttfb, wall, total = float(first_at) - float(pre), float(total_at), int(size)
    else:
        start = time.perf_counter()
        first = None
        total = 0
        with client.stream(
            "GET", f"/api/studies/{uid}/archive", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            if resp.status_code != 200:
                raise SystemExit(f"download: {resp.status_code} {resp.read()[:300]!r}")
            for chunk in resp.iter_raw(1 << 16):
                if first is None:
                    first = time.perf_counter() - start
                total += len(chunk)
        wall = time.perf_counter() - start
        ttfb = first or wall
    peak = _kb(pid, "VmHWM") if reset else 0
    if not reset or peak == 0:
        print(f"warning: no RSS high-water mark for pid {pid} (reset {reset}, peak {peak})")
    return ttfb, wall, total, max(0, peak - base)


def _median_run(
    runs: list[tuple[float, float, int, int]],
) -> tuple[float, float, int, int]:
    """The run of median wall time, with the largest RSS rise of all runs."""
    ordered = sorted(runs, key=lambda r: r[1])
    ttfb, wall, size, _ = ordered[len(ordered) // 2]
    return ttfb, wall, size, max(r[3] for r in runs)


def _floor(home: Path, study_uid: str) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "retrieve_core.py"), "--child", str(home),
            "plain", "study", study_uid,
        ],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    found: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--small", type=int, default=30)
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="downloads and floor reads each")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    for tool in ("storescu",):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not installed: install Debian's dcmtk")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ztb-bench-retrieve-") as tmp_name:
        tmp = Path(tmp_name)
        run(tmp, args)


def run(tmp: Path, args: argparse.Namespace) -> None:
    gw = make_gateway(tmp, ZTBRIDGE_CUSTODIAN_PASSPHRASE=FLOOR_PASSPHRASE)
    port = gw.env["ZTBRIDGE_PORTAL__PORT"]
    (tmp / "pw").write_text(PASSWORD)
    gw.cli(
        "user", "add", "--username", "pat", "--role", "patient", "--password-file",
        str(tmp / "pw"), "--totp-secret-file", str(tmp / "totp"),
    )  # fmt: skip
    secret = (tmp / "totp").read_text().strip()
    gw.cli("patient", "link", "--username", "pat", "--patient-id", PATIENT_ID)
    gw.cli("device", "add", "--posture-policy", "none", "--ae", "STORESCU", "--ip", "127.0.0.1")
    t = time.perf_counter()
    big = make_ct_series(tmp / "big", args.count, patient_id=PATIENT_ID, seed=1)
    small = make_ct_series(tmp / "small", args.small, patient_id=PATIENT_ID, seed=2)
    tiny = [
        make_ct_series(tmp / "tiny" / str(i), 1, rows=8, columns=8, patient_id=PATIENT_ID).files[0]
        for i in range(max(0, args.studies - 2))
    ]
    took = time.perf_counter() - t
    print(f"generated {args.count} + {args.small} + {len(tiny)} files in {took:.1f} s")
    gw.start()
    try:
        t = time.perf_counter()
        _push(gw, big.files)
        _push(gw, small.files)
        _push(gw, tiny)
        print(f"storescu: {args.studies} studies pushed in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        _wait_anchored(gw, args.studies, timeout=1800)
        print(f"anchoring settled in {time.perf_counter() - t:.1f} s")
        assert gw.proc is not None
        pid = gw.proc.pid
        ctx = ssl.create_default_context(cafile=str(gw.home / "tls" / "portal.pem"))
        totp = pyotp.TOTP(secret)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=600) as c:
            logins, lists = [], []
            token = ""
            for step in (0, 30):  # a code is accepted once per time step: two logins
                t0 = time.perf_counter()
                r = c.post(
                    "/api/token",
                    json={
                        "username": "pat",
                        "password": PASSWORD,
                        "totp": totp.at(time.time() + step),
                    },
                )
                t1 = time.perf_counter()
                if r.status_code != 200:
                    raise SystemExit(f"login: {r.status_code} {r.text}")
                token = r.json()["access_token"]
                listed = c.get("/api/studies", headers={"Authorization": f"Bearer {token}"})
                t2 = time.perf_counter()
                assert listed.status_code == 200, listed.text
                n_listed = len(listed.json())
                logins.append(t1 - t0)
                lists.append(t2 - t1)
            for _ in range(8):
                t1 = time.perf_counter()
                c.get("/api/studies", headers={"Authorization": f"Bearer {token}"})
                lists.append(time.perf_counter() - t1)
            base_rss = _kb(pid, "VmRSS")
            cafile = gw.home / "tls" / "portal.pem"
            _download(c, token, small.study_uid, pid, cafile)  # warm: imports, connections
            s_ttfb, s_wall, s_bytes, s_rise = _median_run(
                [_download(c, token, small.study_uid, pid, cafile) for _ in range(args.runs)]
            )
            b_ttfb, b_wall, b_bytes, b_rise = _median_run(
                [_download(c, token, big.study_uid, pid, cafile) for _ in range(args.runs)]
            )
            after_rss = _kb(pid, "VmRSS")
        out = tmp / "export"
        t0 = time.perf_counter()
        gw.cli("export", "--study", big.study_uid, "--out", str(out))
        e_wall = time.perf_counter() - t0
        e_bytes = sum(f.stat().st_size for f in out.rglob("*.dcm"))
        gw_hwm = _kb(pid, "VmHWM")
    finally:
        if gw.proc is not None:
            gw.stop()
    floors = sorted(
        (_floor(gw.home, big.study_uid) for _ in range(args.runs)), key=lambda f: f["wall"]
    )
    floor = floors[len(floors) // 2]
    f_rate = floor["bytes"] / floor["wall"] / 1e6
    z_rate = b_bytes / b_wall / 1e6
    size_gap_kb = (b_bytes - s_bytes) / 1024
    print()
    print(f"{'what':46} {'TTFB ms':>9} {'MB/s':>8} {'MB':>8} {'RSS rise MB':>12}")
    s_rate = s_bytes / s_wall / 1e6
    e_rate = e_bytes / e_wall / 1e6
    rows = [
        (f"ZIP download, {args.small}-slice study (HTTPS)", s_ttfb, s_rate, s_bytes, s_rise),
        (f"ZIP download, {args.count}-slice study (HTTPS)", b_ttfb, z_rate, b_bytes, b_rise),
        (f"ztbridge export, {args.count}-slice (process)", None, e_rate, e_bytes, None),
        (
            f"floor: get + open_sealed, {args.count}-slice",
            floor["ttfb"],
            f_rate,
            floor["bytes"],
            None,
        ),
    ]
    for name, ttfb, rate, nbytes, rise in rows:
        tt = f"{ttfb * 1e3:9.1f}" if ttfb is not None else f"{'-':>9}"
        rr = f"{rise / 1024:12.1f}" if rise is not None else f"{'-':>12}"
        print(f"{name:46} {tt} {rate:8.1f} {nbytes / 1e6:8.1f} {rr}")
    print()
    print(
        "login (POST /api/token, default argon2id): "
        f"{', '.join(f'{x * 1e3:.0f}' for x in logins)} ms;"
        f" study list ({n_listed} studies): median {statistics.median(lists) * 1e3:.0f} ms,"
        f" max {max(lists) * 1e3:.0f} ms; login-to-list: {(logins[0] + lists[0]) * 1e3:.0f} ms"
    )
    print(
        f"gateway RSS: {base_rss / 1024:.0f} MB before the downloads, {after_rss / 1024:.0f} MB"
        f" after; high-water mark since the last reset {gw_hwm / 1024:.0f} MB"
    )
    print()
    bars = [
        ("ZIP MB/s >= 0.8 x floor", z_rate >= 0.8 * f_rate, f"{z_rate:.1f} vs {0.8 * f_rate:.1f}"),
        ("first byte < 200 ms", b_ttfb < 0.2, f"{b_ttfb * 1e3:.1f} ms"),
        (
            "RSS flat in the study's size",
            b_rise - s_rise < 0.1 * size_gap_kb,
            f"rise {b_rise / 1024:.1f} MB ({args.count}) vs {s_rise / 1024:.1f} MB"
            f" ({args.small}); limit +{0.1 * size_gap_kb / 1024:.1f} MB",
        ),
    ]
    for name, ok, detail in bars:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {detail}")


if __name__ == "__main__":
    main()
