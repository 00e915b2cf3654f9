"""``ztbridge agent``: on the sending host, gather the facts, sign them, post them.

Each round: ask the gateway for its time (the clock offset is itself a fact, and tells an
operator why a report looks stale), gather the facts, build a report with a fresh nonce,
sign it with the device's Ed25519 key and post it. The gateway answers with its verdict,
or refuses the report with an RFC 9457 problem whose title and detail are shown as is.
Run as a service it logs a failed round and tries again at the next interval; ``--once``
turns each failure into an exit code instead.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from gateway import crypto
from gateway.errors import ConfigError, CryptoError, ZtbridgeError
from gateway.posture import facts as facts_mod
from gateway.posture.report import NONCE_BYTES, build_report, parse_time, sign_report

log = logging.getLogger("ztbridge.agent")

EXIT_OK = 0
EXIT_ERROR = 1  # the report could not be delivered (network, TLS, key, gateway error)
EXIT_REFUSED = 2  # the gateway refused the report itself (signature, replay, stale, ...)
EXIT_POLICY = 3  # the report was accepted and the host fails its policy


class AgentError(ZtbridgeError):
    """A round failed before the gateway judged the report (network, TLS, server error)."""


class ReportRefusedByGatewayError(ZtbridgeError):
    """The gateway refused the report; carries the problem document it sent."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        title = problem.get("title") or f"HTTP {status}"
        detail = problem.get("detail") or ""
        super().__init__(f"{title}: {detail}" if detail else str(title))
        self.status = status
        self.problem = problem


def agent_version() -> str:
    """The installed ztbridge version, which the report carries."""
    try:
        return version("ztbridge")
    except PackageNotFoundError:
        return "unknown"


def load_key(path: Path) -> crypto.SigningKey:
    """The device's posture key, with a message naming the fix when it cannot be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ConfigError(
            f"posture key {path} does not exist (it is the file 'ztbridge device add"
            " --posture-key-out' wrote; copy it to this host)"
        ) from e
    except OSError as e:
        raise ConfigError(
            f"cannot read posture key {path}: {e.strerror} (run the agent as the user that"
            " owns the key)"
        ) from e
    try:
        key = crypto.load_signing_key_pem(data)
    except CryptoError as e:
        raise ConfigError(
            f"posture key {path} is not usable: {e} (expected the Ed25519 PEM file"
            " 'ztbridge device add --posture-key-out' wrote)"
        ) from e
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "posture key %s is readable by others (mode %o): chmod 600 %s",
            path,
            mode & 0o777,
            path,
        )
    return key


@dataclass(frozen=True)
class Verdict:
    """The gateway's answer to an accepted report."""

    passed: bool
    policy: str
    reasons: list[str]
    notes: list[str]


class GatewayClient:
    """The two calls the agent makes, with errors a person can act on."""

    def __init__(self, base_url: str, ca_file: Path | None, timeout: float = 15.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ConfigError(f"--gateway {base_url!r}: give a URL like https://pacs.example:8443")
        if parts.scheme == "http":
            log.warning(
                "--gateway %s is plain HTTP: reports are signed, but anyone on the path can"
                " read them; use https:// in production",
                base_url,
            )
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"--ca {ca_file}: cannot load CA certificates: {e}") from e
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            verify=verify,
            timeout=timeout,
            headers={"User-Agent": f"ztbridge-agent/{agent_version()}"},
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, path, **kwargs)
        except httpx.ConnectError as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY" in str(e):
                raise AgentError(
                    f"TLS: the gateway's certificate at {self.base_url} is not trusted ({e});"
                    " pass the CA that issued it with --ca FILE"
                ) from e
            raise AgentError(
                f"cannot reach the gateway at {self.base_url}: {e} (is 'ztbridge up' running"
                " with its portal on, and is --gateway right?)"
            ) from e
        except httpx.TimeoutException as e:
            raise AgentError(f"the gateway at {self.base_url} did not answer in time") from e
        except httpx.HTTPError as e:
            raise AgentError(f"talking to the gateway at {self.base_url} failed: {e}") from e

    def clock_offset_ms(self, local: Callable[[], datetime]) -> int:
        """Gateway time minus local time, in ms, measured at the middle of the round trip."""
        before = local()
        t0 = time.monotonic()
        response = self._request("GET", "/api/v1/time")
        rtt = time.monotonic() - t0
        theirs = _server_time(response)
        middle = before.timestamp() + rtt / 2
        return round((theirs.timestamp() - middle) * 1000)

    def post(self, device: str, envelope: dict[str, Any]) -> Verdict:
        """Post one signed report: the verdict, or ReportRefusedByGatewayError (the problem)."""
        response = self._request(
            "POST", f"/api/v1/devices/{quote(device, safe='')}/posture", json=envelope
        )
        body = _json(response)
        if response.status_code == 200 and isinstance(body, dict):
            return Verdict(
                passed=body.get("verdict") == "pass",
                policy=str(body.get("policy", "")),
                reasons=[str(r) for r in body.get("reasons", [])],
                notes=[str(r) for r in body.get("notes", [])],
            )
        problem = body if isinstance(body, dict) else {"title": response.reason_phrase}
        if 400 <= response.status_code < 500:
            raise ReportRefusedByGatewayError(response.status_code, problem)
        raise AgentError(
            f"the gateway failed ({response.status_code}): {problem.get('title', '')}"
            f" {problem.get('detail', '')}".rstrip()
        )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _server_time(response: httpx.Response) -> datetime:
    body = _json(response)
    if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("now"), str):
        try:
            return parse_time(body["now"])
        except ValueError:
            pass
    date = response.headers.get("date")
    if date:  # any HTTP server's Date header: second resolution, still a usable offset
        try:
            return parsedate_to_datetime(date).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    raise AgentError(
        f"the gateway's time endpoint answered {response.status_code} without a usable time"
    )


@dataclass
class Agent:
    """One device's agent: its key, its gateway, and how to gather facts."""

    device: str
    key: crypto.SigningKey
    client: GatewayClient
    collect: Callable[[], tuple[dict[str, Any], dict[str, str]]] = facts_mod.collect
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def build(self) -> dict[str, Any]:
        """Gather the facts and sign a report (network only for the clock offset)."""
        values, unknown = self.collect()
        try:
            values["clock_offset_ms"] = self.client.clock_offset_ms(self.now)
        except AgentError as e:
            values["clock_offset_ms"] = None
            unknown["clock_offset_ms"] = str(e)
        report = build_report(
            self.device,
            self.now(),
            secrets.token_hex(NONCE_BYTES),
            agent_version(),
            values,
            unknown,
        )
        return sign_report(report, self.key)

    def round(self) -> Verdict:
        """Build, sign and post one report."""
        return self.client.post(self.device, self.build())


def run(agent: Agent, interval: float, once: bool, say: Callable[[str], None]) -> int:
    """Post reports until stopped (or once); returns the process exit code."""
    while True:
        started = time.monotonic()
        code = EXIT_OK
        try:
            verdict = agent.round()
        except ReportRefusedByGatewayError as e:
            say(f"the gateway refused the report ({e.status}): {e}")
            code = EXIT_REFUSED
        except ZtbridgeError as e:
            say(f"report not delivered: {e}")
            code = EXIT_ERROR
        else:
            if verdict.passed:
                say(f"posture report accepted: PASS (policy {verdict.policy!r})")
            else:
                say(
                    f"posture report accepted: FAIL (policy {verdict.policy!r}): "
                    + "; ".join(verdict.reasons)
                )
                code = EXIT_POLICY
            for note in verdict.notes:
                say(f"  note: {note}")
        if once:
            return code
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
