"""Anchoring benchmark: the ledger's cost, on the embedded chain and on anvil.

Prints figures, never pass/fail. For each backend (``embedded``: py-evm in process;
``anvil``: a JSON-RPC node on a free loopback port, from tests/ledger/anvil):

1. anchors/s: ``--anchors`` one-instance studies are sealed, then the outbox is sent, one
   ``anchorRecord`` after another (each waits for its receipt), timed.
2. gas per ``anchorRecord`` for studies of 1, 100 and 500 instances (``--sizes``), each
   sealed and anchored through the real pipeline (manifest, capsule, outbox), after one
   warm-up record: the custodian's first record also pays for starting its record list.
   Bar: 500 instances within 5 % of 1 (only the root goes on-chain, so it should be equal).
3. C-STORE throughput with the ledger on versus off: ``ztbridge up`` as a process, DCMTK
   storescu pushing ``--studies`` studies of ``--per-study`` 512x512 CT instances, one
   association per study, back to back (so each study's anchoring overlaps the next push).
   Runs alternate on/off, ``--repeat`` rounds; best and median instances/s. Bar: ledger on
   within 10 % of ledger off. Also the "anchor lag": seconds from the last push's end until
   every study is anchored.

Run::

    .venv/bin/python bench/anchor.py                         # both backends, defaults
    .venv/bin/python bench/anchor.py --backends embedded --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (ROOT, BENCH):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from ingest import find_dcmtk, free_port, stop_process, tree_cpu_seconds, wait_tcp  # noqa: E402

from gateway.importer import import_file  # noqa: E402
from gateway.index.models import anchor_batches  # noqa: E402
from gateway.service import Gateway, open_gateway  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from tests.support.anvil import ANVIL_BIN, ANVIL_FUNDER, Anvil  # noqa: E402
from tests.support.dicomgen import make_ct_series  # noqa: E402

PASSPHRASE = "bench-passphrase-not-secret"
BAR_GAS = 0.05
BAR_THROUGHPUT = 0.10
ZTBRIDGE = str(Path(sys.executable).with_name("ztbridge"))


# --------------------------------------------------------------------------- chains


@contextmanager
def backend_env(name: str, work: Path) -> Iterator[dict[str, str]]:
    """Settings (as environment overrides) for a backend; anvil is started and stopped here."""
    if name == "embedded":
        yield {"ZTBRIDGE_LEDGER__BACKEND": "embedded"}
        return
    if not ANVIL_BIN.exists():
        raise SystemExit(f"anvil missing at {ANVIL_BIN}: run `npm ci --prefix tests/ledger/anvil`")
    node = Anvil(work / f"anvil-{time.monotonic_ns()}.json")
    try:
        yield {"ZTBRIDGE_LEDGER__BACKEND": "rpc", "ZTBRIDGE_LEDGER__RPC_URL": node.url}
    finally:
        node.stop()


def deploy(home: Path, env: dict[str, str]) -> None:
    """Deploy the registry for ``home`` (anvil: funded from its first dev account)."""
    args = [ZTBRIDGE, "chain", "deploy"]
    if env.get("ZTBRIDGE_LEDGER__BACKEND") == "rpc":
        args += ["--rpc", env["ZTBRIDGE_LEDGER__RPC_URL"], "--funder-key", ANVIL_FUNDER]
    full = {**os.environ, **env, "ZTBRIDGE_HOME": str(home)}
    full["ZTBRIDGE_CUSTODIAN_PASSPHRASE"] = PASSPHRASE
    done = subprocess.run(args, env=full, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SystemExit(f"chain deploy failed:\n{done.stdout}\n{done.stderr}")


def open_home(home: Path, env: dict[str, str]) -> Gateway:
    """The gateway in process, with the backend's settings."""
    ledger: dict[str, Any] = {"backend": env["ZTBRIDGE_LEDGER__BACKEND"]}
    if "ZTBRIDGE_LEDGER__RPC_URL" in env:
        ledger["rpc_url"] = env["ZTBRIDGE_LEDGER__RPC_URL"]
    return open_gateway(load_settings(home=home, custodian_passphrase=PASSPHRASE, ledger=ledger))


# --------------------------------------------------------------------------- 1 and 2


@dataclass
class ChainFigures:
    anchors: int
    anchors_per_s: float
    first_gas: int
    gas_by_size: dict[int, int]


def ingest_study(gw: Gateway, folder: Path, count: int, seed: int) -> str:
    series = make_ct_series(folder, count, rows=16, columns=16, seed=seed)
    for f in series.files:
        if not import_file(gw.ingestor, f, "bench").ok:
            raise SystemExit(f"import of {f} failed")
    shutil.rmtree(folder)
    return series.study_uid


def gas_of(gw: Gateway, study_uid: str) -> int:
    from sqlalchemy import select

    with gw.db.read() as conn:
        gas = conn.execute(
            select(anchor_batches.c.gas_used).where(anchor_batches.c.study_uid == study_uid)
        ).scalar_one()
    return int(gas)


def chain_figures(name: str, work: Path, anchors: int, sizes: list[int]) -> ChainFigures:
    """Anchors/s and gas per study size on one backend."""
    with backend_env(name, work) as env:
        home = work / f"{name}-chain"
        deploy(home, env)
        gw = open_home(home, env)
        assert gw.anchoring is not None
        anchoring = gw.anchoring
        session = anchoring.connect()
        try:
            warm = ingest_study(gw, work / "warm", 1, 0)
            anchoring.seal_studies({warm})
            anchoring.send_pending(session)
            first_gas = gas_of(gw, warm)

            studies = [ingest_study(gw, work / f"s{i}", 1, i + 1) for i in range(anchors)]
            anchoring.seal_studies(set(studies))
            start = time.perf_counter()
            report = anchoring.send_pending(session)
            elapsed = time.perf_counter() - start
            assert report.batches == anchors, report

            by_size = {}
            for n, size in enumerate(sizes):
                study = ingest_study(gw, work / f"size{size}", size, 1000 + n)
                anchoring.seal_studies({study})
                anchoring.send_pending(session)
                by_size[size] = gas_of(gw, study)
        finally:
            session.close()
            gw.close()
    return ChainFigures(anchors, anchors / elapsed, first_gas, by_size)


# --------------------------------------------------------------------------- 3


@dataclass
class PushRun:
    ledger: bool
    seconds: float
    inst_per_s: float
    cpu_ms_per_inst: float
    anchor_lag_s: float | None


def anchored_batches(home: Path) -> tuple[int, int]:
    """(anchored, pending) batch rows, read straight from the index (cheaper than a CLI)."""
    conn = sqlite3.connect(f"file:{home / 'index.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        rows = dict(conn.execute("SELECT state, count(*) FROM anchor_batches GROUP BY state"))
    except sqlite3.OperationalError:  # tables not created yet
        rows = {}
    finally:
        conn.close()
    return int(rows.get("anchored", 0)), int(rows.get("pending", 0))


def push_run(
    work: Path,
    backend: dict[str, str],
    ledger_on: bool,
    studies: list[list[Path]],
    tag: str,
) -> PushRun:
    """One ``ztbridge up``, every study pushed over its own association, timed."""
    home = work / f"push-{tag}"
    port = free_port()
    env = {
        **os.environ,
        **backend,
        "ZTBRIDGE_HOME": str(home),
        "ZTBRIDGE_DICOM__PORT": str(port),
        "ZTBRIDGE_DICOM__HOST": "127.0.0.1",
        "ZTBRIDGE_CUSTODIAN_PASSPHRASE": PASSPHRASE,
        "ZTBRIDGE_LEDGER__ENABLED": "true" if ledger_on else "false",
    }
    # storescu runs no posture agent: enrolled with policy "none", as in bench/ingest.py.
    add = [ZTBRIDGE, "device", "add", "--ae", "STORESCU", "--ip", "127.0.0.1"]
    add += ["--posture-policy", "none"]
    subprocess.run(add, env=env, capture_output=True, check=True, timeout=300)
    if ledger_on:
        deploy(home, backend)
    log = (work / f"push-{tag}.log").open("wb")
    proc = subprocess.Popen([ZTBRIDGE, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_tcp(port, proc, 120)
        time.sleep(2.0)  # let the worker connect (journal replay / node check) first
        storescu = find_dcmtk("storescu")
        dcmtk_env = {**os.environ, "TCP_NODELAY": "1"}
        cpu0 = tree_cpu_seconds(proc.pid)
        start = time.perf_counter()
        for files in studies:
            cmd = [storescu, "-aet", "STORESCU", "-aec", "ZTBRIDGE", "127.0.0.1", str(port)]
            done = subprocess.run(
                [*cmd, *map(str, files)], env=dcmtk_env, capture_output=True, timeout=900
            )
            if done.returncode != 0:
                raise SystemExit(f"storescu failed: {done.stderr.decode(errors='replace')}")
        seconds = time.perf_counter() - start
        cpu = tree_cpu_seconds(proc.pid) - cpu0
        lag = None
        if ledger_on:
            while True:
                anchored, pending = anchored_batches(home)
                if anchored >= len(studies) and pending == 0:
                    break
                if time.perf_counter() - start - seconds > 300:
                    raise SystemExit(f"anchoring did not finish: {anchored} anchored")
                time.sleep(0.05)
            lag = time.perf_counter() - start - seconds
    finally:
        stop_process(proc)
        log.close()
    n = sum(len(s) for s in studies)
    shutil.rmtree(home, ignore_errors=True)
    return PushRun(ledger_on, seconds, n / seconds, cpu * 1000 / n, lag)


def throughput(name: str, work: Path, n_studies: int, per_study: int, repeat: int) -> list[PushRun]:
    studies = [
        make_ct_series(work / f"push-data-{i}", per_study, seed=100 + i).files
        for i in range(n_studies)
    ]
    runs = []
    with backend_env(name, work) as env:
        for r in range(repeat):
            order = (True, False) if r % 2 == 0 else (False, True)
            for on in order:
                run = push_run(work, env, on, studies, f"{name}-{r}-{'on' if on else 'off'}")
                lag = f", anchored {run.anchor_lag_s:.1f} s after" if run.anchor_lag_s else ""
                print(
                    f"  {name:9s} round {r + 1} ledger {'on ' if on else 'off'}"
                    f" {run.inst_per_s:7.1f} inst/s  CPU {run.cpu_ms_per_inst:5.2f} ms/inst{lag}",
                    flush=True,
                )
                runs.append(run)
    return runs


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--backends", default="embedded,anvil")
    parser.add_argument("--anchors", type=int, default=30, help="records timed for anchors/s")
    parser.add_argument("--sizes", default="1,100,500", help="study sizes for gas")
    parser.add_argument("--studies", type=int, default=6, help="studies pushed per run")
    parser.add_argument("--per-study", type=int, default=50, help="instances per study")
    parser.add_argument("--repeat", type=int, default=2, help="on/off rounds per backend")
    parser.add_argument("--skip-push", action="store_true", help="chain figures only")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sizes = [int(s) for s in args.sizes.split(",")]

    print(f"ztbridge anchoring benchmark, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"  host    {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs")
    anvil = "absent"
    if ANVIL_BIN.exists():
        anvil = subprocess.run(
            [str(ANVIL_BIN), "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    print(f"  python  {platform.python_version()}; {anvil}")
    summary: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ztbridge-anchor-bench-") as tmp:
        work = Path(tmp)
        for name in backends:
            figs = chain_figures(name, work, args.anchors, sizes)
            small, large = figs.gas_by_size[sizes[0]], figs.gas_by_size[sizes[-1]]
            spread = abs(large - small) / small
            gas = ", ".join(f"{s}: {g}" for s, g in figs.gas_by_size.items())
            print(f"\n[{name}] anchors/s {figs.anchors_per_s:.1f} ({figs.anchors} anchorRecord)")
            print(f"[{name}] gas per anchorRecord by instances: {gas}")
            print(f"[{name}]   (the custodian's first record: {figs.first_gas} gas)")
            verdict = "met" if spread <= BAR_GAS else "MISSED"
            summary.append(
                f"{name:9s} {figs.anchors_per_s:6.1f} anchors/s; gas {sizes[-1]} vs {sizes[0]}"
                f" instances: {spread * 100:+.2f} % (bar <= 5 %: {verdict})"
            )
            if args.skip_push:
                continue
            print(
                f"[{name}] C-STORE: {args.studies} studies x {args.per_study} 512x512 CT,"
                " one association each"
            )
            runs = throughput(name, work, args.studies, args.per_study, args.repeat)
            on = [r.inst_per_s for r in runs if r.ledger]
            off = [r.inst_per_s for r in runs if not r.ledger]
            best = max(on) / max(off)
            med = statistics.median(on) / statistics.median(off)
            lags = [r.anchor_lag_s for r in runs if r.anchor_lag_s is not None]
            verdict = "met" if min(best, med) >= 1 - BAR_THROUGHPUT else "MISSED"
            summary.append(
                f"{name:9s} C-STORE ledger on {max(on):.1f} / off {max(off):.1f} inst/s best"
                f" (ratio {best:.3f}), median ratio {med:.3f} (bar >= 0.90: {verdict});"
                f" anchored {statistics.median(lags):.1f} s after the last push (median)"
            )
    print("\n=== summary ===")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
