"""A posture report: its shape, its canonical bytes, and the Ed25519 signature over them.

The agent signs ``SIGNING_CONTEXT + canonical_json(report)``; the gateway re-encodes the
report it parsed and verifies against the device's registered public key. Re-encoding
(rather than signing the bytes as sent) means key order and whitespace on the wire do not
matter, and a report can be stored and re-verified later from its parsed form. The encoding
is defined in docs/posture.md: UTF-8 JSON, object keys sorted, no insignificant whitespace,
integers only (no floats, whose text form differs between languages).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway import crypto
from gateway.errors import InvalidInputError

FORMAT = "ztbridge-posture/1"
# Domain separation: a posture key's signature can never be mistaken for anything else.
SIGNING_CONTEXT = b"ztbridge posture report v1\x00"
NONCE_BYTES = 16
_MAX_SAFE_INT = 2**53 - 1  # what every JSON implementation reads exactly

FACT_NAMES = (
    "os_name",
    "os_version",
    "kernel",
    "boot_time",
    "last_patch_time",
    "firewall_enabled",
    "disk_encrypted",
    "processes",
    "listening_ports",
    "logged_in_users",
    "clock_offset_ms",
)


def _check_encodable(value: Any, path: str) -> None:
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise InvalidInputError(f"{path}: integer {value} is outside +-(2^53-1)")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_encodable(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInputError(f"{path}: object keys must be strings")
            _check_encodable(v, f"{path}.{k}")
        return
    raise InvalidInputError(
        f"{path}: {type(value).__name__} values are not allowed in a posture report"
        " (integers, strings, booleans, null, arrays and objects only)"
    )


def canonical_json(value: Any) -> bytes:
    """The one byte string a JSON value encodes to (docs/posture.md, 'Canonical encoding')."""
    _check_encodable(value, "report")
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidInputError("report: a string is not valid Unicode (lone surrogate)") from e


def signed_message(report: dict[str, Any]) -> bytes:
    """The exact bytes an agent signs and the gateway verifies."""
    return SIGNING_CONTEXT + canonical_json(report)


def sign_report(report: dict[str, Any], key: crypto.SigningKey) -> dict[str, Any]:
    """The wire form: the report beside the base64 Ed25519 signature of its canonical bytes."""
    signature = crypto.sign_ed25519(key.private, signed_message(report))
    return {"report": report, "signature": base64.b64encode(signature).decode()}


def signature_valid(report: dict[str, Any], signature_b64: str, public: bytes) -> bool:
    """True if ``signature_b64`` is ``public``'s signature of ``report``; never raises.

    A report that cannot be encoded canonically (a float, a lone surrogate, a huge integer)
    was not what any agent signed: it simply does not verify. Checked before anything else
    looks at the report, so unauthenticated input gets no parser's opinion of it.
    """
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        message = signed_message(report)
    except (binascii.Error, ValueError, InvalidInputError, RecursionError):
        return False
    return crypto.verify_ed25519(public, message, signature)


def format_time(when: datetime) -> str:
    """RFC 3339 UTC with microseconds and a Z, the form ``issued_at`` takes."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp with an explicit offset, as aware UTC."""
    if not _RFC3339.match(text):
        raise ValueError(f"{text!r} is not an RFC 3339 time with a zone (2026-01-31T12:00:00Z)")
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class ListeningPort(_Strict):
    """A socket accepting connections (TCP LISTEN) or datagrams (bound UDP)."""

    proto: Literal["tcp", "udp"]
    address: str = Field(max_length=64)
    port: int = Field(ge=0, le=65535)


class Facts(_Strict):
    """What the host says about itself; ``None`` means the agent could not tell."""

    # A newer agent may report facts this gateway does not know yet: they stay in the
    # stored (signed) report but play no part in the verdict.
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    os_name: str | None = Field(None, max_length=64)
    os_version: str | None = Field(None, max_length=64)
    kernel: str | None = Field(None, max_length=128)
    boot_time: int | None = None
    last_patch_time: int | None = None
    firewall_enabled: bool | None = None
    disk_encrypted: bool | None = None
    processes: list[str] | None = Field(None, max_length=65536)
    listening_ports: list[ListeningPort] | None = Field(None, max_length=65536)
    logged_in_users: list[str] | None = Field(None, max_length=4096)
    clock_offset_ms: int | None = None


class Report(_Strict):
    """A parsed, well-formed report (its signature is checked separately)."""

    format: Literal["ztbridge-posture/1"]
    device: str = Field(min_length=1, max_length=16)
    issued_at: str
    nonce: str
    agent_version: str = Field(max_length=64)
    facts: Facts
    unknown: dict[str, str] = Field(default_factory=dict)

    @field_validator("issued_at")
    @classmethod
    def _time(cls, v: str) -> str:
        parse_time(v)
        return v

    @field_validator("nonce")
    @classmethod
    def _nonce(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{32,64}", v):
            raise ValueError("nonce must be 32 to 64 lowercase hex digits (at least 128 bits)")
        return v

    @property
    def issued(self) -> datetime:
        """``issued_at`` as an aware UTC datetime."""
        return parse_time(self.issued_at)


def parse_report(value: Any) -> Report:
    """Validate a report's shape; the message names the first offending field."""
    try:
        return Report.model_validate(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "report"
        raise InvalidInputError(f"report field {where}: {first['msg']}") from e


@dataclass(frozen=True)
class Envelope:
    """A report as posted: the report object and its signature, not yet verified."""

    report: dict[str, Any]
    signature: str


def parse_envelope(body: bytes) -> Envelope:
    """Split a request body into report and signature; refuses anything else clearly."""
    try:
        doc = crypto.strict_json(body)
    except ValueError as e:  # UnicodeDecodeError, and nesting too deep for the parser, too
        raise InvalidInputError(f"the body is not JSON: {e}") from e
    if not isinstance(doc, dict) or set(doc) != {"report", "signature"}:
        raise InvalidInputError('the body must be {"report": {...}, "signature": "<base64>"}')
    if not isinstance(doc["report"], dict) or not isinstance(doc["signature"], str):
        raise InvalidInputError("'report' must be an object and 'signature' a base64 string")
    return Envelope(doc["report"], doc["signature"])


def build_report(
    device: str,
    issued_at: datetime,
    nonce: str,
    agent_version: str,
    facts: dict[str, Any],
    unknown: dict[str, str],
) -> dict[str, Any]:
    """The report object an agent signs (a plain dict: exactly what gets encoded)."""
    return {
        "format": FORMAT,
        "device": device,
        "issued_at": format_time(issued_at),
        "nonce": nonce,
        "agent_version": agent_version,
        "facts": {name: facts.get(name) for name in FACT_NAMES},
        "unknown": dict(sorted(unknown.items())),
    }
