"""Enrolling a device's TLS certificate and user identity (``ztbridge device add``'s options).

Two steps so nothing is half done: ``prepare`` checks every input and does the slow or
failure-prone work (unlocking the CA, issuing the certificate in memory, hashing the passcode,
reading the issuer key) *before* the device exists; ``apply`` then writes the certificate and
key files, which must not exist (checked in ``prepare``, enforced again when each is linked
into place), and only then records them; files whose records fail are removed again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from gateway import crypto, durable, jws, pki
from gateway.credentials import CredentialStore
from gateway.devices import Device, parse_networks
from gateway.errors import InvalidInputError
from gateway.identity import JwtRequirement, PasscodeRequirement, Requirement
from gateway.service import Gateway

IdentityKind = Literal["none", "passcode", "jwt"]


@dataclass(frozen=True)
class EnrollOptions:
    """What the administrator asked for."""

    # None: required when a certificate is issued or a user identity required (the default
    # for a device set up for TLS), else not; False is an explicit --allow-plain.
    require_tls: bool | None = None
    cert_out: Path | None = None
    cert_days: int = pki.LEAF_DAYS
    user_identity: IdentityKind = "none"
    username: str | None = None
    passcode_file: Path | None = None
    jwt_key: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_subject: str | None = None


def requires_tls(o: EnrollOptions) -> bool:
    """Whether the device will be refused over plain TCP.

    A certificate or a user identity makes TLS the default: a device set up for TLS that
    still may fall back to plain TCP gains nothing from its certificate, and a passcode or
    token over plain TCP crosses the network in clear (admission refuses it anyway).
    """
    if o.require_tls is False and o.user_identity != "none":
        raise InvalidInputError(
            "--allow-plain cannot go with --user-identity: a passcode or token is accepted"
            " only over DICOM TLS (over plain TCP it would cross the network in clear)"
        )
    if o.require_tls is not None:
        return o.require_tls
    return o.cert_out is not None or o.user_identity != "none"


@dataclass(frozen=True)
class Prepared:
    """Checked inputs and the work done ahead of creating the device."""

    options: EnrollOptions
    issued: pki.Issued | None
    identity: Requirement | None
    generated_passcode: str | None


@dataclass(frozen=True)
class Enrolled:
    """What ``apply`` did, for the command's output."""

    cert_path: Path | None
    key_path: Path | None
    fingerprint: str | None
    generated_passcode: str | None


def _check_out_files(cert_out: Path) -> tuple[Path, Path]:
    key_out = pki.key_path_for(cert_out)
    for path in (cert_out, key_out):
        if path.exists() or path.is_symlink():
            raise InvalidInputError(f"{path} already exists: move it away or choose another name")
        if not path.parent.is_dir():
            raise InvalidInputError(f"folder {path.parent} does not exist")
    return cert_out, key_out


def issue_for(gw: Gateway, ae_title: str, passphrase: str | None, days: int) -> pki.Issued:
    """Unlock the CA and issue a client certificate for ``ae_title`` (in memory)."""
    authority = pki.unlock_ca(pki.PkiPaths(gw.settings.home), passphrase)
    return pki.issue_device_cert(authority, ae_title, gw.clock, days)


def _identity(gw: Gateway, ae: str, o: EnrollOptions) -> tuple[Requirement | None, str | None]:
    if o.user_identity == "none":
        stray = [
            flag
            for flag, value in (
                ("--username", o.username),
                ("--passcode-file", o.passcode_file),
                ("--jwt-key", o.jwt_key),
                ("--jwt-issuer", o.jwt_issuer),
            )
            if value is not None
        ]
        if stray:
            raise InvalidInputError(
                f"{', '.join(stray)} given without --user-identity passcode|jwt"
            )
        return None, None
    if o.user_identity == "passcode":
        generated = None
        if o.passcode_file is not None:
            try:
                lines = o.passcode_file.read_text().splitlines()
            except OSError as e:
                raise InvalidInputError(f"cannot read {o.passcode_file}: {e.strerror}") from e
            passcode = lines[0] if lines else ""
            if len(passcode) < 8:
                raise InvalidInputError(
                    f"the passcode in {o.passcode_file} is shorter than 8 characters"
                )
        else:
            generated = passcode = secrets.token_urlsafe(18)
        username = o.username or ae
        return PasscodeRequirement(username, crypto.hash_passcode(passcode)), generated
    if o.jwt_key is None or not o.jwt_issuer:
        raise InvalidInputError(
            "--user-identity jwt needs --jwt-key FILE (the issuer's public key, PEM) and"
            " --jwt-issuer NAME (the tokens' iss claim)"
        )
    try:
        pem = o.jwt_key.read_text()
    except OSError as e:
        raise InvalidInputError(f"cannot read {o.jwt_key}: {e.strerror}") from e
    jws.load_issuer_key(pem)  # refuses a key that is not Ed25519 or P-256, up front
    audience = o.jwt_audience or gw.settings.dicom.ae_title
    # The subject defaults to the AE title: the audience is this gateway for every device, so
    # without a per-device subject one token from the issuer would speak for all of them.
    return JwtRequirement(o.jwt_issuer, audience, pem, o.jwt_subject or ae.strip()), None


def prepare(
    gw: Gateway, ae_title: str, options: EnrollOptions, ca_passphrase: str | None
) -> Prepared:
    """Check everything and do the work that can fail, before the device is created."""
    if options.cert_out is not None:
        _check_out_files(options.cert_out)
    tls = requires_tls(options)
    ident, generated = _identity(gw, ae_title, options)
    issued = None
    if options.cert_out is not None:
        issued = issue_for(gw, ae_title, ca_passphrase, options.cert_days)
    elif tls:
        pki.load_ca_cert(pki.PkiPaths(gw.settings.home))  # TLS needs a CA: say so now
    return Prepared(replace(options, require_tls=tls), issued, ident, generated)


def _place(path: Path, data: bytes) -> None:
    """Write ``data`` at ``path`` whole or not at all, owner-only, never over anything."""
    durable.write_new_file(path, data)


def write_cert_files(cert_out: Path, issued: pki.Issued) -> tuple[Path, Path]:
    """Write the certificate and its key, owner-only, refusing to overwrite either; both or
    neither (a key written without its certificate is removed again)."""
    cert_path, key_path = _check_out_files(cert_out)
    _place(key_path, issued.key_pem)
    try:
        _place(cert_path, issued.cert_pem)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return cert_path, key_path


def remove_cert_files(cert_path: Path, key_path: Path) -> None:
    """Undo ``write_cert_files`` when what they were written for could not be recorded."""
    for path in (cert_path, key_path):
        path.unlink(missing_ok=True)


def apply(gw: Gateway, device: Device, prepared: Prepared, actor: str) -> Enrolled:
    """Record the device's credentials and write its certificate files."""
    store = CredentialStore(gw.db, gw.audit, gw.clock)
    o = prepared.options
    cert_path = key_path = None
    # Files first, then the records: a certificate recorded whose key never reached the
    # disk would be a credential nobody holds; files whose records failed are removed.
    if prepared.issued is not None and o.cert_out is not None:
        cert_path, key_path = write_cert_files(o.cert_out, prepared.issued)
    try:
        if o.require_tls:
            store.set_require_tls(device.id, device.ae_title, True, actor)
        if prepared.identity is not None:
            store.set_identity(device.id, device.ae_title, prepared.identity, actor)
        if prepared.issued is not None:
            store.add_certificate(device.id, device.ae_title, prepared.issued, actor, False)
    except BaseException:
        if cert_path is not None and key_path is not None:
            remove_cert_files(cert_path, key_path)
        raise
    return Enrolled(
        cert_path,
        key_path,
        prepared.issued.fingerprint if prepared.issued else None,
        prepared.generated_passcode,
    )


@dataclass(frozen=True)
class NewDevice:
    """What an administrator asks for when registering a device (the CLI's ``device add``)."""

    ae_title: str
    networks: list[str]
    name: str = ""
    posture_policy: str | None = None  # None: posture.default_policy
    posture_key_out: Path | None = None
    options: EnrollOptions = EnrollOptions()
    allow_any_address: bool = False


@dataclass(frozen=True)
class Added:
    """A registered device and everything that was issued for it."""

    device: Device
    policy: str
    posture_fingerprint: str | None
    enrolled: Enrolled
    require_tls: bool


def open_ranges(networks: list[str]) -> list[str]:
    """The ranges that admit every address (0.0.0.0/0, ::/0): a device's AE title alone
    would then admit anyone who can reach the port."""
    return [str(n) for n in parse_networks(networks) if n.prefixlen == 0]


def add_device(gw: Gateway, new: NewDevice, actor: str, ca_passphrase: str | None) -> Added:
    """Register a device with its posture enrollment, certificate and identity: all or nothing.

    Why one service: the device row, its posture key file, its certificate files and its
    credential rows are written by three stores; a failure after the first would leave a
    device that is registered but cannot be admitted (or a key file nobody is registered
    for). Everything that can fail early is checked first (``prepare``); a failure after the
    device exists removes the device and the files again, so the command (or an admin page)
    can simply be retried.
    """
    wide = open_ranges(new.networks)
    if wide and not new.allow_any_address:
        raise InvalidInputError(
            f"{', '.join(wide)} admits every address: anyone who can reach the port and knows"
            " the AE title could send as this device. Give the device's own address or"
            " subnet, or --allow-any-address if that is really meant"
        )
    policy = new.posture_policy or gw.settings.posture.default_policy
    prepared = prepare(gw, new.ae_title, new.options, ca_passphrase)
    device, fp = gw.posture.add_device(
        new.ae_title, new.networks, new.name, actor, policy, new.posture_key_out
    )
    try:
        done = apply(gw, device, prepared, actor)
    except BaseException:
        gw.devices.remove(str(device.id), actor)  # the compensating delete
        if new.posture_key_out is not None:
            new.posture_key_out.unlink(missing_ok=True)
        raise
    return Added(device, policy, fp, done, bool(prepared.options.require_tls))


@dataclass(frozen=True)
class Reissued:
    """A new certificate written for a device, and how many earlier ones it revoked."""

    cert_path: Path
    key_path: Path
    issued: pki.Issued
    revoked: int
    require_tls: bool


def reissue_certificate(
    gw: Gateway,
    device: Device,
    cert_out: Path,
    ca_passphrase: str | None,
    days: int,
    keep_old: bool,
    actor: str,
) -> Reissued:
    """Issue a device a new client certificate; earlier ones are revoked unless ``keep_old``.

    The new files first: if they cannot be written nothing is revoked, and the device keeps
    the certificate it has. Only then the record (revoking the old ones); if that fails, the
    new files go again.
    """
    _check_out_files(cert_out)
    issued = issue_for(gw, device.ae_title, ca_passphrase, days)
    store = CredentialStore(gw.db, gw.audit, gw.clock)
    cert_path, key_path = write_cert_files(cert_out, issued)
    try:
        revoked = store.add_certificate(device.id, device.ae_title, issued, actor, not keep_old)
    except BaseException:
        remove_cert_files(cert_path, key_path)
        raise
    return Reissued(cert_path, key_path, issued, revoked, store.get(device.id).require_tls)
