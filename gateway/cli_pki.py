"""``ztbridge ca ...`` and the device certificate commands (DICOM TLS).

Registered on the main CLI by ``gateway.cli``; kept apart so the TLS commands read as one.
"""

from __future__ import annotations

import getpass
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509

from gateway import pki
from gateway.audit import AuditEvent
from gateway.cli import actor, app, device_app, err, fail, gateway, out, settings
from gateway.credentials import CredentialStore
from gateway.devices import Device
from gateway.enrollment import issue_for, remove_cert_files, write_cert_files
from gateway.errors import InvalidInputError, ZtbridgeError
from gateway.service import Gateway

ca_app = typer.Typer(help="The gateway's certificate authority for DICOM TLS.")
app.add_typer(ca_app, name="ca")


def ca_passphrase(create: bool = False) -> tuple[str | None, bool]:
    """The CA passphrase: ZTBRIDGE_CA_PASSPHRASE, else asked on a terminal.

    When creating a CA non-interactively without one, a passphrase is generated and
    ``(passphrase, True)`` returned so the caller shows it once.
    """
    try:
        configured = settings().ca_passphrase
    except ZtbridgeError as e:
        raise fail(str(e)) from None
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
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "-"
    return ", ".join(str(n.value) for n in sans)


def _certificate_fingerprint(path: Path) -> str:
    from gateway import crypto

    return pki.fingerprint(
        crypto.certificate_der(x509.load_pem_x509_certificate(path.read_bytes()))
    )


@ca_app.command("init")
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


@ca_app.command("show")
def ca_show() -> None:
    """Where the CA and server certificate are, their names, fingerprints and expiry."""
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


@ca_app.command("export")
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


@ca_app.command("server-cert")
def ca_server_cert(
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP address; repeatable (default: as init)"),
    ] = None,
) -> None:
    """Issue a new server key and certificate (new names, or before expiry); restart after."""
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


def _device(gw: Gateway, ref: str) -> Device:
    found = next(
        (d for d in gw.devices.list() if str(d.id) == ref or d.ae_title == ref.strip()), None
    )
    if found is None:
        raise fail(f"no device with id or AE title {ref!r} ('ztbridge device list')")
    return found


@device_app.command("cert")
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
    passphrase, _ = ca_passphrase()
    with gateway() as gw:
        d = _device(gw, ref)
        key_out = pki.key_path_for(cert_out)
        if any(p.exists() or p.is_symlink() for p in (cert_out, key_out)):
            raise InvalidInputError(f"{cert_out} or its .key already exists: choose another name")
        issued = issue_for(gw, d.ae_title, passphrase, days)
        store = CredentialStore(gw.db, gw.audit, gw.clock)
        # The new files first: if they cannot be written nothing is revoked, and the device
        # keeps the certificate it has. Only then the record (revoking the old ones); if that
        # fails, the new files go again.
        cert_path, key_path = write_cert_files(cert_out, issued)
        try:
            revoked = store.add_certificate(d.id, d.ae_title, issued, actor(), not keep_old)
        except BaseException:
            remove_cert_files(cert_path, key_path)
            raise
        out.print(
            f"certificate for {d.ae_title} written to {cert_path} (key {key_path}),"
            f" SHA-256 {issued.fingerprint}, until {issued.not_after:%Y-%m-%d};"
            f" {revoked} earlier certificate(s) revoked"
        )


@device_app.command("revoke-certs")
def device_revoke_certs(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Revoke every certificate of a device: its TLS associations are refused from now on."""
    with gateway() as gw:
        d = _device(gw, ref)
        n = CredentialStore(gw.db, gw.audit, gw.clock).revoke_certificates(
            d.id, d.ae_title, actor()
        )
        out.print(f"{n} certificate(s) of {d.ae_title} revoked")


@device_app.command("tls")
def device_tls(
    ref: Annotated[str, typer.Argument(help="device id or AE title")],
    require: Annotated[
        bool,
        typer.Option("--require-tls/--allow-plain", help="refuse this device over plain TCP"),
    ],
) -> None:
    """Require DICOM TLS from a device, or allow it plain TCP again."""
    with gateway() as gw:
        d = _device(gw, ref)
        store = CredentialStore(gw.db, gw.audit, gw.clock)
        store.set_require_tls(d.id, d.ae_title, require, actor())
        out.print(f"{d.ae_title}: TLS {'required' if require else 'optional'}")
        if not require and store.get(d.id).identity is not None:
            out.print(
                f"note: {d.ae_title} must send a user identity, which is accepted only over"
                " DICOM TLS: its associations over plain TCP will still be refused"
            )
