"""Every failure as an RFC 9457 problem document (``application/problem+json``).

Routes raise ``ProblemError`` or let a ``ZtbridgeError`` escape; the handlers installed by
``install`` turn each into ``{"type", "title", "status", "detail", "instance"}``. Our own
problem types are relative URIs (``/problems/<slug>``) that the app itself serves as a short
description; plain HTTP errors use ``about:blank`` with the status phrase as title, as the
RFC prescribes. Internal errors never leak their text: the log has it, the client gets an
opaque 500.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.accounts.errors import AuthenticationError, SessionError, ThrottledError
from gateway.accounts.shares import AccessDeniedError
from gateway.errors import ConfigError, InvalidInputError, NotFoundError, ZtbridgeError
from gateway.ledger.errors import LedgerError, LedgerRevertError
from gateway.posture.service import Problem, ReportRefusedError

log = logging.getLogger("ztbridge.portal")

MEDIA_TYPE = "application/problem+json"

# slug -> (HTTP status, title, what it means and what to do)
CATALOGUE: dict[str, tuple[int, str, str]] = {
    Problem.MALFORMED: (
        400,
        "Malformed posture report",
        "The body is not a well-formed signed report. The detail names the first bad field.",
    ),
    Problem.TOO_LARGE: (413, "Posture report too large", "Raise posture.max_report_kb."),
    Problem.UNKNOWN_DEVICE: (
        404,
        "Unknown device",
        "No device is registered with this AE title ('ztbridge device list').",
    ),
    Problem.NOT_ENROLLED: (
        409,
        "Device not enrolled for posture",
        "The device has no posture key: 'ztbridge device posture ID --policy NAME"
        " --posture-key-out FILE' gives it one.",
    ),
    Problem.BAD_SIGNATURE: (
        403,
        "Bad signature",
        "The signature does not verify with the device's registered posture key. The report"
        " was not stored; the device's current posture is unchanged.",
    ),
    Problem.WRONG_DEVICE: (
        422,
        "Report for another device",
        "The report names a different device than the URL it was posted to.",
    ),
    Problem.STALE: (
        422,
        "Stale posture report",
        "The report is older than the device's policy accepts. Check the host's clock.",
    ),
    Problem.FUTURE: (
        422,
        "Posture report from the future",
        "The report is dated ahead of the gateway's clock by more than posture.max_future_seconds.",
    ),
    Problem.REPLAYED: (
        409,
        "Replayed posture report",
        "A report with this nonce was already received from this device.",
    ),
    "invalid-input": (400, "Invalid input", "The request is not acceptable as sent."),
    "too-large": (
        413,
        "Request too large",
        "The body, or one instance in it, is over the limit the detail names"
        " (portal.max_body_mb, ingest.max_instance_mb). Nothing was stored.",
    ),
    "unsupported-media-type": (
        415,
        "Unsupported media type",
        "The body is not of a media type this resource takes; the detail names the one it does.",
    ),
    "invalid-query": (
        400,
        "Invalid query",
        "A QIDO-RS query key or value is not valid (the detail and the key member name it):"
        " an unknown attribute, a value not of its VR, a range that ends before it starts.",
    ),
    "not-acceptable": (
        406,
        "Not acceptable",
        "None of the media types the Accept header allows can be served for this resource;"
        " the detail (or the accept member) names what can.",
    ),
    "unauthenticated": (
        401,
        "Not logged in",
        "Log in (password, then TOTP) or send a valid bearer token from POST /api/token.",
    ),
    "login-failed": (
        401,
        "Login failed",
        "The username, password or code is not right (one answer for every cause).",
    ),
    "forbidden": (403, "Forbidden", "The account may not do this."),
    "csrf-failed": (
        403,
        "CSRF token missing or wrong",
        "A state-changing request with the session cookie must carry the page's CSRF token"
        " (form field csrf_token or header X-CSRF-Token). Reload the page and try again.",
    ),
    "throttled": (
        429,
        "Too many failed attempts",
        "Wait the Retry-After seconds, then try again (never a permanent lockout).",
    ),
    "ledger-unavailable": (
        503,
        "Ledger unavailable",
        "The chain could not take the transaction now; nothing was changed. Try again later.",
    ),
    "ledger-refused": (
        409,
        "Refused by the registry",
        "The contract refused the transaction (for a share: the study may not be anchored"
        " yet; try again in a minute).",
    ),
    "not-found": (404, "Not found", "The resource does not exist."),
    "scrape-refused": (
        403,
        "Scrape refused",
        "/metrics answers only requests from portal.metrics_networks or bearing"
        " portal.metrics_token (Authorization: Bearer ...).",
    ),
    "dicomdir-unavailable": (
        422,
        "No DICOMDIR for this study",
        "The study lacks an attribute a DICOMDIR record requires; download it without"
        " ?dicomdir=1 (the plain ZIP has every file).",
    ),
    "gateway-misconfigured": (
        500,
        "Gateway misconfigured",
        "ztbridge's configuration prevents answering; its log names the setting.",
    ),
    "internal-error": (500, "Internal error", "An unexpected error; ztbridge's log has details."),
}


class ProblemError(Exception):
    """Raise from a route to answer with one of the catalogue's problem types."""

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.extra = extra


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    type_: str = "about:blank",
    **extra: Any,
) -> JSONResponse:
    """A problem document with the right media type."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title,
        "status": status,
        "instance": request.url.path,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def from_catalogue(request: Request, slug: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem response of one of our own types."""
    status, title, _ = CATALOGUE[slug]
    return problem_response(request, status, title, detail, f"/problems/{slug}", **extra)


NOT_FOUND_DETAIL = "no such study"


def denied(request: Request, status: int, reason: str) -> JSONResponse:
    """A refused access: 404 says exactly what an unknown study says (nothing leaks)."""
    if status == 404:
        return from_catalogue(request, "not-found", NOT_FOUND_DETAIL)
    if status == 401:
        return from_catalogue(request, "unauthenticated", reason)
    return from_catalogue(request, "forbidden", reason)


def _for_error(request: Request, e: ZtbridgeError) -> JSONResponse:
    if isinstance(e, ReportRefusedError):
        return from_catalogue(request, e.problem, e.reason)
    if isinstance(e, ThrottledError):
        response = from_catalogue(request, "throttled", str(e))
        response.headers["Retry-After"] = str(max(1, round(e.retry_after)))
        return response
    if isinstance(e, AuthenticationError):
        return from_catalogue(request, "login-failed", str(e))
    if isinstance(e, SessionError):
        return from_catalogue(request, "unauthenticated", "log in again")
    if isinstance(e, AccessDeniedError):
        return denied(request, e.decision.status, e.decision.reason)
    if isinstance(e, LedgerRevertError):
        return from_catalogue(request, "ledger-refused", str(e))
    if isinstance(e, LedgerError):
        log.warning("%s %s: ledger: %s", request.method, request.url.path, e)
        return from_catalogue(request, "ledger-unavailable", "the ledger did not answer")
    if isinstance(e, NotFoundError):
        return from_catalogue(request, "not-found", str(e))
    if isinstance(e, InvalidInputError):
        return from_catalogue(request, "invalid-input", str(e))
    if isinstance(e, ConfigError):
        log.error("%s %s: configuration problem: %s", request.method, request.url.path, e)
        return from_catalogue(
            request, "gateway-misconfigured", "the gateway's log names the problem"
        )
    log.error("%s %s failed: %s", request.method, request.url.path, e)
    return from_catalogue(request, "internal-error", "the gateway's log has the details")


def install(app: FastAPI) -> None:
    """Make every failure the app can produce a problem document."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return from_catalogue(request, exc.slug, exc.detail, **exc.extra)

    async def on_ours(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ZtbridgeError)
        return _for_error(request, exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else None
        response = problem_response(request, exc.status_code, phrase, detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", ""))}
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return from_catalogue(
            request,
            "invalid-input",
            f"{'.'.join(first['loc'])}: {first['msg']}",
            errors=errors,
        )

    async def on_anything(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return from_catalogue(request, "internal-error", "the gateway's log has the details")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(ZtbridgeError, on_ours)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_anything)
