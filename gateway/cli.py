"""The ``ztbridge`` command line (everything but ``up``, which the composition root adds).

Each command opens the gateway from settings, does one thing, and exits non-zero with a
message that names the fix when something is wrong; tracebacks are for bugs only.
"""

from __future__ import annotations

import getpass
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import func, select

from gateway.anchoring.drain import drain
from gateway.anchoring.outbox import outbox_counts
from gateway.anchoring.service import Anchoring
from gateway.errors import ZtbridgeError
from gateway.export import export_car, export_study
from gateway.importer import discover, import_paths
from gateway.index.models import audit_events, devices, instances, studies
from gateway.ingest import Outcome, Receipt
from gateway.service import Gateway, StoreAccess, open_gateway
from gateway.settings import Settings, load_settings

app = typer.Typer(
    name="ztbridge",
    help="Zero-trust PACS bridge: DICOM in, encrypted and content-addressed at rest.",
    no_args_is_help=True,
    add_completion=False,
)
device_app = typer.Typer(help="Register the modalities and workstations allowed to send.")
store_app = typer.Typer(help="The content store (ciphertext objects addressed by CID).")
audit_app = typer.Typer(help="The hash-chained audit log.")
app.add_typer(device_app, name="device")
app.add_typer(store_app, name="store")
app.add_typer(audit_app, name="audit")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")
_STATE: dict[str, Any] = {"config": None}


def actor() -> str:
    """Who is at the keyboard, for the audit log."""
    return f"cli:{getpass.getuser()}"


def setup_logging(level: str) -> None:
    """Plain timestamped lines on stderr."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def settings() -> Settings:
    """Settings from --config / ZTBRIDGE_CONFIG / environment."""
    return load_settings(_STATE["config"])


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person and return the exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


@contextmanager
def gateway(store_access: StoreAccess = "read", create: bool = False) -> Iterator[Gateway]:
    """Open the gateway for one command, turning our errors into clean exits.

    Only commands that add data (``device add``, ``import``) may start a new data folder;
    the others refuse a folder without an index rather than create an empty one.
    """
    try:
        s = settings()
        setup_logging("WARNING" if s.log_level == "INFO" else s.log_level)
        if not create and not s.index.url and not (s.home / "index.sqlite3").exists():
            raise fail(
                f"no ztbridge data at {s.home}: set ZTBRIDGE_HOME to the data folder"
                " (or run 'ztbridge up' there first)"
            )
        gw = open_gateway(s, store_access=store_access)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    try:
        announce_passphrase(gw)
        yield gw
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    finally:
        gw.close()


def announce_passphrase(gw: Gateway) -> None:
    """Show a generated custodian passphrase exactly once."""
    if gw.generated_passphrase:
        err.print(
            "\n[bold yellow]A custodian key was created.[/] Its passphrase is shown only now;"
            " store it offline (it is needed to export or recover studies):\n\n"
            f"    ZTBRIDGE_CUSTODIAN_PASSPHRASE={gw.generated_passphrase}\n",
            highlight=False,
        )


@app.callback()
def main_options(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (default: $ZTBRIDGE_CONFIG)"),
    ] = None,
) -> None:
    """ztbridge."""
    _STATE["config"] = config


@app.command()
def status() -> None:
    """Show where data lives and what is stored."""
    with gateway() as gw:
        with gw.db.read() as conn:
            n_dev = conn.execute(select(func.count()).select_from(devices)).scalar_one()
            n_std = conn.execute(select(func.count()).select_from(studies)).scalar_one()
            n_ins, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(instances.c.size), 0))
            ).one()
            n_aud = conn.execute(select(func.count()).select_from(audit_events)).scalar_one()
        s = gw.settings
        table = Table(show_header=False, box=None)
        for k, v in [
            ("home", str(s.home.resolve())),
            ("DICOM", f"{s.dicom.ae_title} on {s.dicom.host}:{s.dicom.port}"),
            ("index", s.index_url.split("@")[-1]),
            ("store", f"{s.store.backend} at {s.home / 'store'}"),
            ("custodian key", f"{gw.custodian.kem}, {gw.keys_dir / 'custodian.json'}"),
            ("devices", str(n_dev)),
            ("studies", str(n_std)),
            ("instances", f"{n_ins} ({size / 1e6:.1f} MB)"),
            ("audit events", str(n_aud)),
            ("ledger", _ledger_status(gw)),
        ]:
            table.add_row(f"[bold]{k}[/]", v)
        out.print(table)


def _ledger_status(gw: Gateway) -> str:
    """One line on anchoring for ``status`` (the chain itself: ``ztbridge chain info``)."""
    if gw.anchoring is None:
        return "off ([ledger] enabled = false)"
    c = outbox_counts(gw.db)
    line = (
        f"{gw.settings.ledger.backend}; {c.batches_anchored} batches anchored, pending anchors:"
        f" {c.batches_pending} batches + {c.unbatched_instances} instances not yet sealed,"
        f" audit {c.audit_anchored_to}/{c.audit_head} anchored"
    )
    if c.batches_conflict:
        line += f"; {c.batches_conflict} CONFLICTS (ztbridge chain info)"
    return line


@device_app.command("add")
def device_add(
    ae: Annotated[str, typer.Option("--ae", help="the device's calling AE title")],
    ip: Annotated[
        list[str], typer.Option("--ip", help="allowed source address or CIDR range; repeatable")
    ],
    name: Annotated[
        str, typer.Option("--name", help="a description, e.g. 'CT scanner room 2'")
    ] = "",
) -> None:
    """Register a device allowed to send (AE title + source addresses)."""
    with gateway(create=True) as gw:
        d = gw.devices.add(ae, ip, name, actor())
        out.print(
            f"device {d.id} registered in {gw.settings.home}: AE {d.ae_title!r} from "
            + ", ".join(str(n) for n in d.networks)
        )
        s = gw.settings.dicom
        out.print(
            f"Configure the modality to send to AE title {s.ae_title!r}, port {s.port}"
            f" of this host, calling AE title {d.ae_title!r}."
        )


@device_app.command("list")
def device_list() -> None:
    """List registered devices."""
    with gateway() as gw:
        table = Table("id", "AE title", "allowed from", "name", "active")
        for d in gw.devices.list():
            table.add_row(
                str(d.id),
                d.ae_title,
                ", ".join(str(n) for n in d.networks),
                d.name,
                "yes" if d.active else "no",
            )
        out.print(table)


@device_app.command("remove")
def device_remove(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Remove a device; its associations are refused from now on."""
    with gateway() as gw:
        d = gw.devices.remove(ref, actor())
        out.print(f"device {d.id} ({d.ae_title}) removed")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@app.command("import")
def import_cmd(
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders (recursed)")],
) -> None:
    """Import Part-10 files through the same pipeline as C-STORE."""
    with gateway("write", create=True) as gw:
        try:
            files = list(discover(paths))
        except FileNotFoundError as e:
            raise fail(str(e)) from None
        with _progress() as bar:
            task = bar.add_task("importing", total=len(files))
            studies: set[str] = set()

            def tick(_path: Path, r: Receipt) -> None:
                bar.advance(task)
                if r.study_uid is not None:
                    studies.add(r.study_uid)

            summary = import_paths(gw.ingestor, files, actor(), tick)
        c = summary.counts
        out.print(
            f"{len(files)} files: {c[Outcome.STORED.value]} stored,"
            f" {c[Outcome.NEW_VERSION.value]} stored as new versions,"
            f" {c[Outcome.DUPLICATE.value]} duplicates, {c[Outcome.REFUSED.value]} refused"
        )
        for path, reason in summary.refused:
            out.print(f"  refused {path}: {reason}", highlight=False)
        if gw.anchoring is not None and studies:
            _anchor_import(gw.anchoring, studies)
        if summary.refused:
            raise typer.Exit(2)


def _anchor_import(anchoring: Anchoring, studies: set[str]) -> None:
    """Seal the imported studies into batches, then try to anchor them right away."""
    sealed = anchoring.seal_studies(studies)
    result = drain(anchoring, seal_all=False)
    if result.error:
        err.print(
            f"anchoring: {len(sealed)} batches sealed, waiting in the outbox ({result.error});"
            " 'ztbridge up' or 'ztbridge chain drain' sends them",
            highlight=False,
        )
    else:
        out.print(f"anchoring: {len(sealed)} batches sealed, {result.batches} anchored")


def _passphrase(gw: Gateway) -> str | None:
    p = gw.settings.custodian_passphrase
    return p.get_secret_value() if p else None


@app.command("export")
def export_cmd(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_dir: Annotated[Path, typer.Option("--out", help="folder to write Part-10 files into")],
) -> None:
    """Decrypt a study with the custodian key into Part-10 files."""
    with gateway() as gw:
        with _progress() as bar:
            task = bar.add_task("exporting", total=None)
            files = export_study(gw, study, out_dir, _passphrase(gw), lambda _f: bar.advance(task))
        out.print(f"{len(files)} files written under {out_dir}")


@store_app.command("export-car")
def store_export_car(
    study: Annotated[str, typer.Option("--study", help="Study Instance UID")],
    out_file: Annotated[Path, typer.Option("--out", help="CAR file to write")],
) -> None:
    """Write a study's ciphertext objects as a CARv1 file ('ipfs dag import' accepts it)."""
    if not out_file.parent.is_dir():
        raise fail(f"folder {out_file.parent} does not exist: create it or choose another --out")
    with gateway() as gw:
        tmp = out_file.with_suffix(out_file.suffix + ".part")
        try:
            with tmp.open("wb") as f:
                objects, blocks = export_car(gw, study, f)
            tmp.replace(out_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        out.print(f"{objects} objects, {blocks} blocks written to {out_file}")


@store_app.command("verify")
def store_verify() -> None:
    """Re-read every stored block and check it against its CID; check every index row."""
    with gateway() as gw:
        problems = 0
        for p in gw.store.verify():
            problems += 1
            out.print(f"[red]block {p.cid}: {p.problem}[/]", highlight=False)
        with gw.db.read() as conn:
            rows = conn.execute(
                select(instances.c.cid, instances.c.sop_instance_uid, instances.c.version)
            ).all()
        for row in rows:
            if not gw.store.has(row.cid):
                problems += 1
                out.print(
                    f"[red]instance {row.sop_instance_uid} v{row.version}: object {row.cid}"
                    " is missing[/]",
                    highlight=False,
                )
        if problems:
            raise fail(f"{problems} problems found")
        out.print(f"store verified: every block matches its CID; {len(rows)} index rows resolve")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; name the first edited, reordered or missing entry."""
    with gateway() as gw:
        problem = gw.audit.verify()
        if problem is not None:
            raise fail(f"audit chain broken at entry {problem.seq}: {problem.problem}")
        head = gw.audit.head()
        out.print(f"audit chain intact: {head[0] if head else 0} entries")


def run(entry: Callable[[], T]) -> T:
    """Call a typer app, mapping KeyboardInterrupt to exit 130."""
    try:
        return entry()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
