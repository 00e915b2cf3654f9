"""One settings object, built once at start and passed down.

Sources, lowest to highest precedence: built-in defaults, a TOML file
(``--config``, else ``$ZTBRIDGE_CONFIG``, else ``$ZTBRIDGE_HOME/ztbridge.toml`` if present),
then ``ZTBRIDGE_*`` environment variables (nested keys joined with ``__``, e.g.
``ZTBRIDGE_DICOM__PORT=11112``). Invalid values fail at start with a message naming the key.
"""

from __future__ import annotations

import os
import re
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import ConfigError

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE VR: no backslash
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")  # a browser origin: no path, no '*'


def valid_ae_title(value: str) -> str:
    """Check an AE title the way peers will: 1-16 printable chars, no backslash, not blank."""
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1 to 16 printable characters, no backslash")
    return value.strip()


class _Section(BaseModel):
    """A settings table: unknown keys are errors (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class DicomSettings(_Section):
    """The DICOM listener."""

    ae_title: str = "ZTBRIDGE"
    host: str = "0.0.0.0"
    port: int = Field(11112, ge=1, le=65535)
    max_pdu_length: int = Field(
        262144, ge=4096, le=4 * 1024 * 1024, description="largest P-DATA PDU we accept"
    )
    max_associations: int = Field(16, ge=1, le=1024)
    max_associations_per_device: int = Field(4, ge=1, le=1024)
    max_pending_connections: int = Field(
        32,
        ge=1,
        le=4096,
        description="connections that spoke but sent no whole A-ASSOCIATE-RQ yet (a thread each)",
    )
    max_pending_per_address: int = Field(
        8, ge=1, le=4096, description="of those, from one source address; its oldest is dropped"
    )
    max_silent_connections: int = Field(
        1024, ge=1, le=65536, description="connections that sent nothing yet (a descriptor each)"
    )
    max_silent_per_address: int = Field(
        256, ge=1, le=65536, description="of those, from one source address; its oldest is dropped"
    )
    max_associate_rq_bytes: int = Field(
        65536, ge=4096, le=1 << 20, description="largest A-ASSOCIATE-RQ PDU we read"
    )
    plain_tcp: bool = Field(True, description="serve DICOM over plain TCP on `port`")
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(60.0, gt=0)
    network_timeout: float = Field(60.0, gt=0)
    tcp_nodelay: bool = True

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, v: str) -> str:
        return valid_ae_title(v)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        ip_address(v)
        return v


class TlsSettings(_Section):
    """DICOM TLS (PS3.15 BCP 195 profiles: TLS 1.2 with their suites, and TLS 1.3)."""

    enabled: Literal["auto", "on", "off"] = "auto"
    port: int = Field(2762, ge=1, le=65535)
    handshake_timeout: float = Field(10.0, gt=0, le=300)
    min_version: Literal["1.2", "1.3"] = "1.2"
    max_jwt_validity_days: int = Field(
        366, ge=0, le=36500, description="refuse a JWT whose exp is further ahead; 0: no cap"
    )
    jwt_leeway_seconds: int = Field(
        60,
        ge=0,
        le=300,
        description=(
            "clock disagreement allowed for a JWT's exp, nbf and iat: a token expired less"
            " than this long ago is still accepted (gateway/identity.py says why 60)"
        ),
    )


class StoreSettings(_Section):
    """Where ciphertext objects live."""

    backend: Literal["blockstore"] = "blockstore"
    pack_max_mb: int = Field(1024, ge=1, le=65536)
    runway_mb: int = Field(
        0, ge=0, le=4096, description="zeroed space kept ahead of the write position; 0: off"
    )


class IndexSettings(_Section):
    """The searchable index (metadata, CIDs, audit)."""

    url: str = Field("", description="SQLAlchemy URL; empty means SQLite under home")
    key: str = Field(
        "",
        description=(
            "where the index key comes from: file:PATH, env:NAME or credential:NAME (systemd);"
            " empty: development makes <home>.index-key beside the home, production refuses"
        ),
    )


class CryptoSettings(_Section):
    """Key wrapping algorithms."""

    kem: Literal["x25519", "mlkem768-x25519"] = "x25519"


class IngestSettings(_Section):
    """The ingest pipeline."""

    study_key_idle_seconds: float = Field(
        3600.0, gt=0, description="forget a study key from memory after this long unused"
    )
    max_instance_mb: int = Field(2048, ge=1)
    require_patient_id: bool = Field(
        False,
        description=(
            "refuse instances with an empty or missing Patient ID (0xA900); by default they"
            " are stored, owned by the custodian and flagged for reconciliation"
        ),
    )
    max_inflated_mb: int = Field(
        2048,
        ge=1,
        description=(
            "a deflated data set (1.2.840.10008.1.2.1.99) may inflate to at most this many MiB;"
            " more is refused with 0xA700 while inflating"
        ),
    )
    max_inflate_ratio: int = Field(
        200,
        ge=1,
        description=(
            "past its first 64 MiB, a deflated data set may inflate to at most this many times"
            " its deflated size (deflate bombs reach ~1030); more is refused with 0xA700"
        ),
    )


class PortalSettings(_Section):
    """The HTTPS endpoint (FastAPI): posture reports today, the web portal later."""

    host: str = "0.0.0.0"
    port: int = Field(8443, ge=1, le=65535)
    tls_cert_file: Path | None = Field(None, description="PEM server certificate (chain)")
    tls_key_file: Path | None = Field(None, description="PEM private key of the certificate")
    allow_plain_http: bool = Field(
        False,
        description=(
            "serve plain HTTP, not a self-signed certificate, when none is set (development)"
        ),
    )
    # The connection guard in front of the app (portal/edge.py says why each exists).
    max_connections: int = Field(
        512,
        ge=1,
        le=65536,
        description=(
            "open connections in all (~0.3 MB each over TLS); when full, the oldest idle one"
            " (in its handshake or awaiting headers) is closed for a newcomer"
        ),
    )
    max_connections_per_address: int = Field(
        32, ge=1, le=65536, description="open connections from one IPv4 address or IPv6 /64"
    )
    tls_handshake_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds a client has to finish the TLS handshake"
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description=(
            "seconds for a request line and headers to arrive, from the handshake or the end"
            " of the previous response; then 408 and close"
        ),
    )
    keep_alive_timeout: int = Field(
        5, ge=1, le=300, description="seconds an idle kept-alive connection stays open"
    )
    max_header_bytes: int = Field(
        16384,
        ge=1024,
        le=1 << 20,
        description="largest request line plus headers; larger gets 431",
    )
    max_body_mb: int = Field(
        2048,
        ge=1,
        le=1 << 20,
        description=(
            "largest request body in MiB (a STOW-RS upload of a CT series is the largest);"
            " a larger Content-Length gets 413 before the body is read, a chunked body 413"
            " as soon as it passes the limit"
        ),
    )
    body_window_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description=(
            "a request body must deliver body_min_kib within each window of this many seconds"
            " (while the app reads it); slower gets 408 and close"
        ),
    )
    body_min_kib: int = Field(
        16,
        ge=1,
        le=1 << 20,
        description="KiB a request body must deliver per body_window_seconds",
    )
    hsts_max_age_seconds: int = Field(
        31536000,
        ge=0,
        le=63072000,
        description="Strict-Transport-Security max-age over HTTPS; 0: no HSTS header",
    )
    # /metrics (portal/routers/metrics.py): off (404) unless one of these is set.
    metrics_networks: list[str] = Field(
        default_factory=list,
        description="addresses (CIDR) whose requests may scrape /metrics without a token",
    )
    metrics_token: SecretStr | None = Field(
        None, description="bearer token that may scrape /metrics from any address"
    )

    cors_origins: list[str] = Field(
        default_factory=list,
        description=(
            "origins (scheme://host[:port]) whose pages may call /dicom-web from a browser, for"
            " a viewer served elsewhere; empty: CORS off"
        ),
    )

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        ip_address(v)
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path, no '*'"
                )
        return v

    @field_validator("metrics_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for cidr in v:
            ip_network(cidr, strict=False)
        return v

    @field_validator("metrics_token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("the metrics token must be at least 16 characters")
        return v


class DicomwebSettings(_Section):
    """DICOMweb (``/dicom-web``): what WADO-RS answers with."""

    bulk_data_threshold: int = Field(
        1024,
        ge=0,
        le=1 << 30,
        description=(
            "binary values (OB, OW, OD, OF, OL, OV, UN) longer than this many bytes are"
            " given in metadata as a BulkDataURI instead of inline"
        ),
    )
    max_decode_mb: int = Field(
        512,
        ge=1,
        le=1 << 20,
        description=(
            "largest instance (MiB) decrypted whole for frames, bulk data, rendering or"
            " transcoding; larger answers 406 (retrieval as stored always streams)"
        ),
    )


class PostureSettings(_Section):
    """Device posture: where policies come from and what a failing report does."""

    policy_file: Path | None = Field(
        None, description="TOML file of named policies; unset: $home/posture-policy.toml"
    )
    default_policy: str = "default"
    max_future_seconds: int = Field(
        60, ge=0, le=3600, description="how far ahead of our clock a report's time may be"
    )
    max_report_kb: int = Field(512, ge=16, le=16384)
    abort_on_failure: bool = Field(
        True, description="abort a device's open associations when its report fails"
    )
    recheck_seconds: float = Field(
        10.0, ge=0, le=3600, description="re-judge open associations' posture this often; 0: off"
    )
    refusal_summary_seconds: float = Field(
        60.0,
        ge=1,
        le=86400,
        description="refused posts are logged once per kind and window, then summed up",
    )


class LedgerSettings(_Section):
    """Anchoring studies and the audit log on the registry contract (see docs/ledger.md)."""

    enabled: bool = True
    backend: Literal["embedded", "rpc"] = "embedded"
    rpc_url: str = Field("", description="JSON-RPC URL; empty: the one 'chain deploy' recorded")
    request_timeout: float = Field(10.0, gt=0)
    receipt_timeout: float = Field(120.0, gt=0)
    anchor_idle_seconds: float = Field(
        30.0, gt=0, description="seal a study's batch after this long without a new instance"
    )
    audit_every_events: int = Field(1000, ge=1)
    audit_every_seconds: float = Field(300.0, gt=0)
    retry_max_seconds: float = Field(60.0, gt=0, description="backoff cap, chain unreachable")
    defer_while_busy_seconds: float = Field(
        30.0, ge=0, description="hold transactions back this long while instances arrive"
    )
    poll_seconds: float = Field(1.0, gt=0)

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL (or empty)")
        return v


class AccountsSettings(_Section):
    """Patient, doctor and staff accounts (gateway/accounts/): passwords, TOTP, enrollment."""

    public_url: str = Field(
        "",
        description=(
            "the portal's address as users reach it, for enrollment links"
            " (<public_url>/enroll/<token>); empty: https://localhost:<portal.port>"
        ),
    )
    enrollment_hours: float = Field(24.0, gt=0, le=24 * 30, description="an enrollment link's life")
    password_min_length: int = Field(12, ge=12, le=128)
    # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 (its first choice).
    argon2_memory_kib: int = Field(19456, ge=8, le=4 * 1024 * 1024)
    argon2_time_cost: int = Field(2, ge=1, le=100)
    argon2_parallelism: int = Field(1, ge=1, le=64)
    totp_issuer: str = Field("ztbridge", min_length=1, max_length=64)
    totp_valid_window: int = Field(1, ge=0, le=2, description="time steps accepted either side")
    throttle_free_failures: int = Field(
        3, ge=1, le=100, description="failed logins (per account and address) before any delay"
    )
    throttle_base_seconds: float = Field(1.0, gt=0, le=3600)
    throttle_max_seconds: float = Field(
        300.0, gt=0, le=86400, description="the delay's cap: never a permanent lockout"
    )
    throttle_address_free_failures: int = Field(
        20, ge=1, le=10000, description="failed logins from one address (any account) before delay"
    )

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        if v and not v.startswith(("https://", "http://")):
            raise ValueError("an https:// URL (or empty)")
        return v.rstrip("/")


class SessionSettings(_Section):
    """Browser sessions and API tokens (server-side; gateway/accounts/sessions.py)."""

    idle_minutes: float = Field(15.0, gt=0, le=24 * 60)
    absolute_hours: float = Field(8.0, gt=0, le=24 * 30)
    second_factor_minutes: float = Field(
        5.0, gt=0, le=60, description="time between the password and the TOTP code"
    )
    access_token_minutes: float = Field(5.0, gt=0, le=60)
    refresh_token_hours: float = Field(
        8.0, gt=0, le=24 * 30, description="a refresh-token family's absolute life"
    )


class ViewerSettings(_Section):
    """The OHIF viewer the portal serves at ``/viewer`` (portal/viewer.py)."""

    enabled: bool = Field(True, description="serve OHIF at /viewer and link studies to it")
    dist_dir: Path | None = Field(
        None,
        description=(
            "OHIF's built dist/ folder; default: the one `make install` puts under"
            " portal/viewer/node_modules/@ohif/app/dist"
        ),
    )
    show_study_list: bool = Field(
        True, description="OHIF's own study list at /viewer/ (only what the user may see)"
    )
    max_web_workers: int = Field(
        3, ge=1, le=16, description="OHIF's image-decoding web workers per browser tab"
    )


class Settings(BaseSettings):
    """Everything ztbridge can be told. See config/ztbridge.example.toml for each key."""

    model_config = SettingsConfigDict(
        env_prefix="ZTBRIDGE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    home: Path = Path("var")
    environment: Literal["development", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    custodian_passphrase: SecretStr | None = None
    ca_passphrase: SecretStr | None = None
    dicom: DicomSettings = DicomSettings()
    tls: TlsSettings = TlsSettings()
    store: StoreSettings = StoreSettings()
    index: IndexSettings = IndexSettings()
    crypto: CryptoSettings = CryptoSettings()
    ingest: IngestSettings = IngestSettings()
    portal: PortalSettings = PortalSettings()
    posture: PostureSettings = PostureSettings()
    ledger: LedgerSettings = LedgerSettings()
    accounts: AccountsSettings = AccountsSettings()
    sessions: SessionSettings = SessionSettings()
    dicomweb: DicomwebSettings = DicomwebSettings()
    viewer: ViewerSettings = ViewerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(_TomlBesideItsFile(settings_cls, toml_file))
        return tuple(sources)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        # Resolved once, at start: a later chdir (or another shell) must not silently open
        # a second, empty data folder.
        return v.expanduser().absolute()

    @property
    def index_url(self) -> str:
        """The SQLAlchemy URL in force."""
        return self.index.url or f"sqlite:///{self.home / 'index.sqlite3'}"


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


class _TomlBesideItsFile(TomlConfigSettingsSource):
    """The TOML file, with a relative ``home`` taken from the file's own folder.

    Why: a service manager starts ztbridge from ``/``; ``home = "var"`` taken from the
    working directory would then be the system's ``/var``. Relative to the file, it is the
    same folder whoever starts ztbridge from wherever. (``ZTBRIDGE_HOME`` in the environment
    stays relative to the working directory, like any path given on a command line.)
    """

    def __init__(self, settings_cls: type[BaseSettings], toml_file: Path) -> None:
        super().__init__(settings_cls, toml_file=toml_file)
        self._folder = toml_file.expanduser().absolute().parent

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        home = data.get("home")
        if isinstance(home, str) and not Path(home).expanduser().is_absolute():
            data = {**data, "home": str(self._folder / home)}
        return data


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        env = "ZTBRIDGE_" + "__".join(str(p) for p in item["loc"]).upper()
        lines.append(f"setting '{key}' (env {env}): {item['msg']}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from file + environment (+ explicit overrides, highest).

    Raises ConfigError naming every bad key and its environment variable.
    """
    if config is None and os.environ.get("ZTBRIDGE_CONFIG"):
        config = Path(os.environ["ZTBRIDGE_CONFIG"])
    if config is None:
        home = Path(os.environ.get("ZTBRIDGE_HOME", "var"))
        candidate = home / "ztbridge.toml"
        config = candidate if candidate.is_file() else None
    if config is not None and not config.is_file():
        raise ConfigError(f"config file {config} does not exist (from --config or ZTBRIDGE_CONFIG)")
    _CONFIG_FILE["path"] = config
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_describe(e)) from e
    finally:
        _CONFIG_FILE["path"] = None
    if settings.environment == "production":
        phrase = settings.custodian_passphrase
        if phrase is not None and phrase.get_secret_value() in _PLACEHOLDERS:
            raise ConfigError(
                "setting 'custodian_passphrase' is a placeholder; set ZTBRIDGE_CUSTODIAN_PASSPHRASE"
                " to a real secret (or unset it to have one generated) before running in production"
            )
        ca_phrase = settings.ca_passphrase
        if ca_phrase is not None and ca_phrase.get_secret_value() in _PLACEHOLDERS:
            raise ConfigError(
                "setting 'ca_passphrase' is a placeholder; set ZTBRIDGE_CA_PASSPHRASE to a real"
                " secret before running in production"
            )
    if settings.environment == "production" and settings.portal.allow_plain_http:
        raise ConfigError(
            "setting 'portal.allow_plain_http' (env ZTBRIDGE_PORTAL__ALLOW_PLAIN_HTTP) is for"
            " development only; set portal.tls_cert_file and portal.tls_key_file instead"
        )
    return settings


_PLACEHOLDERS = {"changeme", "change-me", "changethis", "secret", "password", ""}
