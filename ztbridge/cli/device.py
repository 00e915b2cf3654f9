"""``ztbridge device ...``: the modalities and workstations allowed to send.

The certificate commands of a device (``device cert``, ``tls``, ``revoke-certs``) are in
``ztbridge.cli.ca`` with the rest of DICOM TLS, and joined to this group at the bottom.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ztbridge.cli import ca
from ztbridge.cli.console import actor, err, fail, out
from ztbridge.cli.context import gateway

if TYPE_CHECKING:
    from gateway.service import Gateway

app = typer.Typer(help="Register the modalities and workstations allowed to send.")


@app.command("add")
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
    allow_any_address: Annotated[
        bool,
        typer.Option(
            "--allow-any-address",
            help="accept --ip 0.0.0.0/0 or ::/0 (every address); refused without it",
        ),
    ] = False,
) -> None:
    """Register a device allowed to send: AE title, source addresses, posture policy,
    and optionally DICOM TLS and user identity."""
    from gateway import enrollment

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
    new = enrollment.NewDevice(
        ae, ip, name, posture_policy, posture_key_out, options, allow_any_address
    )
    with gateway(create=True) as gw:
        added = enrollment.add_device(
            gw, new, actor(), ca.ca_passphrase()[0] if cert_out is not None else None
        )
        d, done, s = added.device, added.enrolled, gw.settings
        out.print(
            f"device {d.id} registered in {s.home}: AE {d.ae_title!r} from "
            + ", ".join(str(n) for n in d.networks)
        )
        if enrollment.open_ranges([str(n) for n in d.networks]):
            err.print(
                "[bold yellow]warning:[/] this device is admitted from ANY address"
                " (--allow-any-address): its AE title is all that identifies it",
                highlight=False,
            )
        port = f"port {s.dicom.port}"
        if done.cert_path is not None:
            out.print(
                f"TLS client certificate {done.cert_path}, key {done.key_path}"
                f" (SHA-256 {done.fingerprint}); CA certificate {s.home / 'tls' / 'ca.pem'}"
            )
        if added.require_tls or done.cert_path is not None:
            port = f"DICOM TLS port {s.tls.port}"
        if done.cert_path is not None and not added.require_tls:
            err.print(ca.plain_tcp_warning(d.ae_title), highlight=False)
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
        print_enrollment(gw, d.ae_title, added.policy, posture_key_out, added.posture_fingerprint)


def print_enrollment(
    gw: Gateway, ae: str, policy: str, key_out: Path | None, fp: str | None
) -> None:
    """Tell the admin what the device's posture needs next."""
    from gateway.posture.policy import NO_POLICY

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


@app.command("list")
def device_list() -> None:
    """List registered devices."""
    from gateway.posture.policy import NO_POLICY
    from gateway.status import device_views

    with gateway() as gw:
        views = device_views(gw)
    table = Table(
        "id", "AE title", "allowed from", "name", "active", "posture", "TLS", "user identity"
    )
    for v in views:
        policy = v.posture_policy
        table.add_row(
            str(v.id),
            escape(v.ae_title),
            ", ".join(v.networks),
            escape(v.name),
            "yes" if v.active else "no",
            "none (not required)" if policy == NO_POLICY else (policy or "not enrolled"),
            f"{'required' if v.require_tls else 'optional'}, {v.certificates} cert(s)",
            escape(v.user_identity or "-"),
        )
    out.print(table)


@app.command("show")
def device_show(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Show a device, its posture policy, its last posture report and the verdict."""
    from gateway.posture.show import describe

    with gateway() as gw:
        for line in describe(gw.posture, gw.devices.find(ref), gw.clock.now()):
            out.print(line, highlight=False, markup=False)


@app.command("posture")
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


@app.command("remove")
def device_remove(ref: Annotated[str, typer.Argument(help="device id or AE title")]) -> None:
    """Remove a device; its associations are refused from now on."""
    with gateway() as gw:
        d = gw.devices.remove(ref, actor())
        out.print(f"device {d.id} ({d.ae_title}) removed")


app.command("cert")(ca.device_cert)
app.command("revoke-certs")(ca.device_revoke_certs)
app.command("tls")(ca.device_tls)
