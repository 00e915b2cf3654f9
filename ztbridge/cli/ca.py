"""``ztbridge ca ...`` and the device certificate commands (DICOM TLS).

The device commands here (``device_cert``, ``device_tls``, ``device_revoke_certs``) are joined
to the ``device`` group by ``ztbridge.cli.device``; kept here so the TLS commands read as one.
"""

from __future__ import annotations

import getpass
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from gateway import pki
from ztbridge.cli.console import actor, err, fail, out
from ztbridge.cli.context import gateway, settings

if TYPE_CHECKING:
    from cryptography import x509

app = typer.Typer(help="The gateway's certificate authority for DICOM TLS.")


def ca_passphrase(create: bool = False) -> tuple[str | None, bool]:
    """The CA passphrase: ZTBRIDGE_CA_PASSPHRASE, else asked on a terminal.

    When creating a CA non-interactively without one, a passphrase is generated and
    ``(passphrase, True)`` returned so the caller shows it once.
    """
    configured = settings().ca_passphrase
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value(), False
    if sys.stdin.isatty():
        first = getpass.getpass("CA passphrase: ")
        if create and getpass.getpass("again: ") != first:
            raise fail("the two passphrases differ")
        return first, False
    if create:
        return secrets.token_urlsafe(24), True
    return None, False


def _names(cert: x509.Certificate) -> str:
    from cryptography import x509

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "-"
    return ", ".join(str(n.value) for n in sans)


def _certificate_fingerprint(path: Path) -> str:
    from cryptography import x509

    from gateway import crypto, pki

    return pki.fingerprint(
        crypto.certificate_der(x509.load_pem_x509_certificate(path.read_bytes()))
    )


@app.command("init")
def ca_init(
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="DNS name or IP address modalities use for this gateway (server certificate"
            " SAN); repeatable. Default: this host's names, localhost, 127.0.0.1, ::1",
        ),
    ] = None,
) -> None:
    """Create the CA and the gateway's TLS server certificate (once per data folder)."""
    from gateway.audit import AuditEvent

    hosts = host or pki.default_server_names()
    passphrase, generated = ca_passphrase(create=True)
    assert passphrase is not None
    with gateway(create=True) as gw:
        paths = pki.PkiPaths(gw.settings.home)
        pki.init_ca(paths, passphrase, hosts, gw.clock)
        gw.audit.record(
            AuditEvent("ca.created", actor(), str(paths.ca_cert), "ok", {"hosts": hosts})
        )
        if generated:
            err.print(
                "\n[bold yellow]A CA was created.[/] Its passphrase is shown only now; it is"
                " needed to issue device certificates:\n\n"
                f"    ZTBRIDGE_CA_PASSPHRASE={passphrase}\n",
                highlight=False,
            )
        out.print(f"CA certificate:      {paths.ca_cert}  (give this file to every modality)")
        out.print(f"server certificate:  {paths.server_cert}  for {', '.join(hosts)}")
        out.print(
            f"DICOM TLS will listen on port {gw.settings.tls.port} from the next 'ztbridge up'."
        )


@app.command("show")
def ca_show() -> None:
    """Where the CA and server certificate are, their names, fingerprints and expiry."""
    from cryptography import x509

    with gateway() as gw:
        paths = pki.PkiPaths(gw.settings.home)
        ca = pki.load_ca_cert(paths)
        out.print(f"CA:     {paths.ca_cert}")
        out.print(f"        {ca.subject.rfc4514_string()}, until {ca.not_valid_after_utc:%Y-%m-%d}")
        out.print(f"        SHA-256 {_certificate_fingerprint(paths.ca_cert)}")
        if paths.server_cert.is_file():
            server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
            out.print(f"server: {paths.server_cert}")
            out.print(f"        for {_names(server)}, until {server.not_valid_after_utc:%Y-%m-%d}")


@app.command("export")
def ca_export(
    out_file: Annotated[Path, typer.Option("--out", help="where to write the CA certificate")],
) -> None:
    """Copy the CA certificate (public) to a file for a modality's trust store."""

    with gateway() as gw:
        paths = pki.PkiPaths(gw.settings.home)
        pki.load_ca_cert(paths)
        pki.write_new_file(out_file, paths.ca_cert.read_bytes())
        out_file.chmod(0o644)
        out.print(f"CA certificate written to {out_file}")


@app.command("server-cert")
def ca_server_cert(
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP address; repeatable (default: as init)"),
    ] = None,
) -> None:
    """Issue a new server key and certificate (new names, or before expiry); restart after."""
    from gateway.audit import AuditEvent

    hosts = host or pki.default_server_names()
    passphrase, _ = ca_passphrase()
    with gateway() as gw:
        paths = pki.PkiPaths(gw.settings.home)
        issued = pki.reissue_server_cert(paths, pki.unlock_ca(paths, passphrase), hosts, gw.clock)
        gw.audit.record(
            AuditEvent(
                "ca.server-cert",
                actor(),
                str(paths.server_cert),
                "ok",
                {"hosts": hosts, "serial": issued.serial},
            )
        )
        out.print(f"new server certificate for {', '.join(hosts)}; restart 'ztbridge up' to use it")


def device_cert(
    ref: Annotated[str, typer.Argument(help="device id or AE title")],
    cert_out: Annotated[
        Path, typer.Option("--out", help="certificate file to write (the key goes beside, .key)")
    ],
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="keep earlier certificates valid (for a changeover)")
    ] = False,
    days: Annotated[int, typer.Option("--days", help="validity in days")] = pki.LEAF_DAYS,
) -> None:
    """Issue a new client certificate for a device; earlier ones are revoked unless --keep-old."""
    from gateway.enrollment import reissue_certificate

    passphrase, _ = ca_passphrase()
    with gateway() as gw:
        d = gw.devices.find(ref)
        done = reissue_certificate(gw, d, cert_out, passphrase, days, keep_old, actor())
        out.print(
            f"certificate for {d.ae_title} written to {done.cert_path} (key {done.key_path}),"
            f" SHA-256 {done.issued.fingerprint}, until {done.issued.not_after:%Y-%m-%d};"
            f" {done.revoked} earlier certificate(s) revoked"
        )
        if not done.require_tls:
            err.print(plain_tcp_warning(d.ae_title), highlight=False)


def plain_tcp_warning(ae: str) -> str:
    """What an admin must read when a device with a certificate may still use plain TCP."""
    return (
        f"[bold yellow]warning:[/] {escape(ae)} may still send over PLAIN TCP (unencrypted,"
        " no certificate checked): its certificate protects nothing until TLS is required."
        f" Close it with:  ztbridge device tls {escape(ae)} --require-tls"
    )


def device_revoke_certs(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Revoke every certificate of a device: its TLS associations are refused from now on."""
    from gateway.credentials import CredentialStore

    with gateway() as gw:
        d = gw.devices.find(ref)
        n = CredentialStore(gw.db, gw.audit, gw.clock).revoke_certificates(
            d.id, d.ae_title, actor()
        )
        out.print(f"{n} certificate(s) of {d.ae_title} revoked")


def device_tls(
    ref: Annotated[str, typer.Argument(help="device id or AE title")],
    require: Annotated[
        bool,
        typer.Option("--require-tls/--allow-plain", help="refuse this device over plain TCP"),
    ],
) -> None:
    """Require DICOM TLS from a device, or allow it plain TCP again."""
    from gateway.credentials import CredentialStore

    with gateway() as gw:
        d = gw.devices.find(ref)
        store = CredentialStore(gw.db, gw.audit, gw.clock)
        store.set_require_tls(d.id, d.ae_title, require, actor())
        out.print(f"{d.ae_title}: TLS {'required' if require else 'optional'}")
        creds = store.get(d.id)
        if not require and creds.fingerprints:
            err.print(plain_tcp_warning(d.ae_title), highlight=False)
        if not require and creds.identity is not None:
            out.print(
                f"note: {d.ae_title} must send a user identity, which is accepted only over"
                " DICOM TLS: its associations over plain TCP will still be refused"
            )
