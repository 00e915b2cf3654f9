"""CSRF protection: a per-session token, checked on every state-changing request.

The token is an HMAC of the browser's session cookie under a key that lives only in this
process (the signed double-submit pattern, OWASP's recommendation), so nothing is stored:
each rotation of the session id (login, second factor) changes the token with it, and a
token from another browser or another session never matches. Sessions end when the process
restarts (their keys are only in memory), so a per-process key costs nothing.

Checked (``check``, an app-wide dependency) on POST, PUT, PATCH and DELETE that carry the
session cookie and no bearer token: a bearer token is never sent by a browser on its own, so
it needs no CSRF token. The login and enrollment forms are checked even before a session
exists (login CSRF): their pages set an anonymous cookie first (``ensure_cookie``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from portal.problems import ProblemError

COOKIE = "__Host-ztb_session"
FIELD = "csrf_token"
HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Forms that must carry a token even without a logged-in session.
FORM_PATHS = ("/login", "/enroll/", "/logout")
#: Where a cookie never authorizes a state change (``portal.dicomweb.deps`` answers 401 to
#: a cookie-only STOW-RS), so there is nothing for a forged request to ride on.
COOKIE_NEVER_WRITES = ("/dicom-web/",)


def _key(request: Request) -> bytes:
    key: bytes = request.app.state.csrf_key
    return key


def token_for(key: bytes, cookie: str) -> str:
    """The CSRF token of the session cookie ``cookie``."""
    return hmac.new(key, b"ztbridge csrf\0" + cookie.encode(), hashlib.sha256).hexdigest()


def set_cookie(response: Response, value: str) -> None:
    """The session cookie: ``__Host-`` prefixed, Secure, HttpOnly, SameSite=Strict, Path=/."""
    response.set_cookie(COOKIE, value, secure=True, httponly=True, samesite="strict", path="/")


def clear_cookie(response: Response) -> None:
    """Forget the session cookie in the browser."""
    response.delete_cookie(COOKIE, secure=True, httponly=True, samesite="strict", path="/")


def ensure_cookie(request: Request, response: Response) -> str:
    """The browser's session cookie, or a new anonymous one (not a session: it only binds
    the login form's CSRF token to this browser, and is replaced at login)."""
    value = request.cookies.get(COOKIE)
    if not value:
        value = secrets.token_urlsafe(32)
        set_cookie(response, value)
    return value


def page_token(request: Request, cookie: str | None = None) -> str:
    """The token a page puts in its forms (for ``cookie``, default the request's)."""
    value = cookie if cookie is not None else request.cookies.get(COOKIE, "")
    return token_for(_key(request), value) if value else ""


def _bearer(request: Request) -> bool:
    return request.headers.get("authorization", "").lower().startswith("bearer ")


async def check(request: Request) -> None:
    """403 problem+json for a state-changing request without the right token."""
    if request.method in SAFE_METHODS or _bearer(request):
        return
    if request.url.path.startswith(COOKIE_NEVER_WRITES):
        return
    cookie = request.cookies.get(COOKIE)
    is_form = request.url.path.startswith(FORM_PATHS)
    if not cookie and not is_form:
        return  # no ambient credential to forge (programs, posture reports)
    sent = request.headers.get(HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(FIELD)
        sent = value if isinstance(value, str) else None
    if not cookie or not sent or not hmac.compare_digest(sent, token_for(_key(request), cookie)):
        raise ProblemError("csrf-failed", "the CSRF token is missing or does not match")
