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
from gateway.logsafe import SafeFormatter
from gateway.posture.policy import NO_POLICY
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
    """Plain timestamped lines on stderr, one per message whatever a peer put in it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
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
            ("portal", _portal_line(s)),
            (
                "posture policies",
                f"{', '.join(gw.posture.policies.names())} from {gw.posture.policies.source}",
            ),
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


def _portal_line(s: Settings) -> str:
    from gateway.pki import portal_certificate

    p = s.portal
    found = portal_certificate(s.home, p.tls_cert_file, p.tls_key_file)
    if found is not None:
        return f"https://{p.host}:{p.port} (certificate {found[0]})"
    if p.allow_plain_http:
        return f"http://{p.host}:{p.port} (plain HTTP: development only)"
    return "off (no certificate: run 'ztbridge ca init'): posture reports cannot be received"


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
    posture_policy: Annotated[
        str | None,
        typer.Option(
            "--posture-policy",
            help="posture policy the device is judged by (default: posture.default_policy);"
            " 'none' for a device that cannot run the agent",
        ),
    ] = None,
    posture_key_out: Annotated[
        Path | None,
        typer.Option(
            "--posture-key-out",
            help="write the device's new posture signing key here (0600, never overwritten)",
        ),
    ] = None,
    require_tls: Annotated[
        bool | None,
        typer.Option(
            "--require-tls/--allow-plain",
            help="refuse this device over plain TCP (the default with --cert-out or"
            " --user-identity; --allow-plain keeps plain TCP open to a device with a certificate)",
        ),
    ] = None,
    cert_out: Annotated[
        Path | None,
        typer.Option(
            "--cert-out",
            help="issue a TLS client certificate to this file (its key goes beside, .key);"
            " needs the CA passphrase (ZTBRIDGE_CA_PASSPHRASE)",
        ),
    ] = None,
    cert_days: Annotated[int, typer.Option("--cert-days", help="certificate validity")] = 730,
    user_identity: Annotated[
        str,
        typer.Option(
            "--user-identity",
            help="require DICOM user identity: 'passcode' (username + passcode) or 'jwt'",
        ),
    ] = "none",
    username: Annotated[
        str | None, typer.Option("--username", help="passcode: user name (default: AE title)")
    ] = None,
    passcode_file: Annotated[
        Path | None,
        typer.Option("--passcode-file", help="passcode: first line of FILE (default: generated)"),
    ] = None,
    jwt_key: Annotated[
        Path | None, typer.Option("--jwt-key", help="jwt: issuer public key (PEM, Ed25519/P-256)")
    ] = None,
    jwt_issuer: Annotated[str | None, typer.Option("--jwt-issuer", help="jwt: iss claim")] = None,
    jwt_audience: Annotated[
        str | None, typer.Option("--jwt-audience", help="jwt: aud claim (default: our AE)")
    ] = None,
    jwt_subject: Annotated[
        str | None,
        typer.Option("--jwt-subject", help="jwt: required sub claim (default: the AE title)"),
    ] = None,
) -> None:
    """Register a device allowed to send: AE title, source addresses, posture policy,
    and optionally DICOM TLS and user identity."""
    from gateway import enrollment
    from gateway.cli_pki import ca_passphrase

    if user_identity not in ("none", "passcode", "jwt"):
        raise fail("--user-identity is 'passcode' or 'jwt'")
    options = enrollment.EnrollOptions(
        require_tls=require_tls,
        cert_out=cert_out,
        cert_days=cert_days,
        user_identity=user_identity,  # type: ignore[arg-type]
        username=username,
        passcode_file=passcode_file,
        jwt_key=jwt_key,
        jwt_issuer=jwt_issuer,
        jwt_audience=jwt_audience,
        jwt_subject=jwt_subject,
    )
    with gateway(create=True) as gw:
        policy = posture_policy or gw.settings.posture.default_policy
        prepared = enrollment.prepare(
            gw, ae, options, ca_passphrase()[0] if cert_out is not None else None
        )
        d, fp = gw.posture.add_device(ae, ip, name, actor(), policy, posture_key_out)
        try:
            done = enrollment.apply(gw, d, prepared, actor())
        except ZtbridgeError:
            gw.devices.remove(str(d.id), actor())  # all or nothing
            if posture_key_out is not None:
                posture_key_out.unlink(missing_ok=True)
            raise
        out.print(
            f"device {d.id} registered in {gw.settings.home}: AE {d.ae_title!r} from "
            + ", ".join(str(n) for n in d.networks)
        )
        s = gw.settings
        port = f"port {s.dicom.port}"
        if done.cert_path is not None:
            out.print(
                f"TLS client certificate {done.cert_path}, key {done.key_path}"
                f" (SHA-256 {done.fingerprint}); CA certificate {s.home / 'tls' / 'ca.pem'}"
            )
        if prepared.options.require_tls or done.cert_path is not None:
            port = f"DICOM TLS port {s.tls.port}"
        if done.generated_passcode:
            err.print(
                "The device's passcode is shown only now; enter it in the modality:\n\n"
                f"    {done.generated_passcode}\n",
                highlight=False,
            )
        out.print(
            f"Configure the modality to send to AE title {s.dicom.ae_title!r}, {port}"
            f" of this host, calling AE title {d.ae_title!r}."
        )
        print_enrollment(gw, d.ae_title, policy, posture_key_out, fp)


def print_enrollment(
    gw: Gateway, ae: str, policy: str, key_out: Path | None, fp: str | None
) -> None:
    """Tell the admin what the device's posture needs next."""
    if policy == NO_POLICY:
        out.print(
            "Posture: not required (policy 'none'): admitted on AE title and address alone.",
            highlight=False,
        )
        return
    out.print(
        f"Posture: policy {policy!r}; associations are refused until a fresh, passing"
        " report arrives.",
        highlight=False,
    )
    if key_out is not None:
        out.print(
            f"Posture key {fp} written to {key_out}. Copy it to the device's host (mode 0600)"
            " and run there:\n    ztbridge agent --gateway https://<this host>:"
            f"{gw.settings.portal.port} --device {ae} --key <key file> --ca <CA file>",
            highlight=False,
            markup=False,
        )


@device_app.command("list")
def device_list() -> None:
    """List registered devices."""
    from gateway.credentials import CredentialStore
    from gateway.identity import describe

    with gateway() as gw:
        policies = gw.posture.policies_by_device()
        creds = CredentialStore(gw.db, gw.audit, gw.clock)
        table = Table(
            "id", "AE title", "allowed from", "name", "active", "posture", "TLS", "user identity"
        )
        for d in gw.devices.list():
            policy = policies.get(d.id)
            c = creds.get(d.id)
            tls = "required" if c.require_tls else "optional"
            table.add_row(
                str(d.id),
                d.ae_title,
                ", ".join(str(n) for n in d.networks),
                d.name,
                "yes" if d.active else "no",
                "none (not required)" if policy == NO_POLICY else (policy or "not enrolled"),
                f"{tls}, {len(c.fingerprints)} cert(s)",
                describe(c.identity) if c.identity else "-",
            )
        out.print(table)


@device_app.command("show")
def device_show(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Show a device, its posture policy, its last posture report and the verdict."""
    from gateway.posture.show import describe

    with gateway() as gw:
        for line in describe(gw.posture, gw.devices.find(ref), gw.clock.now()):
            out.print(line, highlight=False, markup=False)


@device_app.command("posture")
def device_posture_cmd(
    ref: Annotated[str, typer.Argument(help="device id or AE title")],
    policy: Annotated[
        str | None, typer.Option("--policy", help="the posture policy to judge it by, or 'none'")
    ] = None,
    posture_key_out: Annotated[
        Path | None,
        typer.Option("--posture-key-out", help="give the device a new key, written here (0600)"),
    ] = None,
) -> None:
    """Change a device's posture policy and/or give it a new posture key."""
    if policy is None and posture_key_out is None:
        raise fail("give --policy NAME and/or --posture-key-out FILE")
    with gateway() as gw:
        d, new_policy, fp = gw.posture.reconfigure(ref, actor(), policy, posture_key_out)
        out.print(f"device {d.id} ({d.ae_title}): posture policy {new_policy!r}")
        if fp is not None:
            out.print(
                f"new posture key {fp} written to {posture_key_out}; the old key no longer"
                " verifies",
                highlight=False,
            )


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


@app.command("agent")
def agent_cmd(
    gateway_url: Annotated[
        str, typer.Option("--gateway", help="the gateway's portal, e.g. https://pacs:8443")
    ],
    device: Annotated[str, typer.Option("--device", help="this device's AE title")],
    key: Annotated[Path, typer.Option("--key", help="the device's posture key (PEM)")],
    interval: Annotated[
        float, typer.Option("--interval", min=5, help="seconds between reports")
    ] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="post one report and exit")] = False,
    ca: Annotated[
        Path | None,
        typer.Option("--ca", help="CA certificate(s) that issued the gateway's (PEM)"),
    ] = None,
) -> None:
    """Run on the sending host: post a signed posture report every --interval seconds.

    Exit codes with --once: 0 accepted and passing, 3 accepted and failing the policy,
    2 refused by the gateway, 1 not delivered.
    """
    from gateway.posture import agent as agent_mod

    setup_logging("INFO")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
    try:
        signing_key = agent_mod.load_key(key)
        client = agent_mod.GatewayClient(gateway_url, ca)
    except ZtbridgeError as e:
        raise fail(str(e)) from None
    try:
        code = agent_mod.run(
            agent_mod.Agent(device, signing_key, client),
            interval,
            once,
            lambda line: err.print(line, highlight=False, markup=False),
        )
    finally:
        client.close()
    raise typer.Exit(code)


def run(entry: Callable[[], T]) -> T:
    """Call a typer app, mapping KeyboardInterrupt to exit 130."""
    try:
        return entry()
    except KeyboardInterrupt:
        raise SystemExit(130) from None


# The DICOM TLS commands (ca ..., device cert/tls/revoke-certs) register themselves on import.
from gateway import cli_pki  # noqa: E402,F401
