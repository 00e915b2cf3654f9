"""Browser login and enrollment: ``/enroll/{token}``, ``/login``, ``/login/totp``, ``/logout``.

Thin: each form is one call of the account service (``gateway.accounts.users``). The
session id rotates at both login steps (the anonymous cookie of the login page is replaced
by a pending session, the pending one by the full session), so an id planted before login
is worthless after it. Every form carries the CSRF token (``portal.csrf``); nothing changes
on a GET.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.access import Role
from gateway.accounts.errors import (
    AuthenticationError,
    EnrollmentError,
    SessionError,
    ThrottledError,
)
from gateway.errors import InvalidInputError
from portal.csrf import COOKIE, clear_cookie, ensure_cookie, set_cookie
from portal.deps import ClientAddress, GatewayDep
from portal.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)

HOME = {
    Role.PATIENT: "/studies",
    Role.DOCTOR: "/studies",
    Role.ADMIN: "/admin",
    Role.AUDITOR: "/admin/audit",
}


def home_of(role: str) -> str:
    """Where an account lands after login."""
    return HOME.get(Role(role), "/account")


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _with_cookie(request: Request, name: str, ctx: dict[str, object]) -> Response:
    """A form page, with the anonymous cookie its CSRF token is bound to."""
    probe = Response()
    cookie = ensure_cookie(request, probe)
    page = render(request, name, ctx, cookie=cookie)
    for key, value in probe.headers.items():
        if key == "set-cookie":
            page.headers.append(key, value)
    return page


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> Response:
    """The password form."""
    return _with_cookie(request, "login.html", {})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    gw: GatewayDep,
    peer: ClientAddress,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    """Step 1: the password; the session id rotates to a pending one."""
    previous = request.cookies.get(COOKIE)
    try:
        pending = await run_in_threadpool(
            gw.users.login_password, username, password, peer, previous
        )
    except ThrottledError as e:
        page = render(request, "login.html", {"error": str(e)}, status=429)
        page.headers["Retry-After"] = str(max(1, round(e.retry_after)))
        return page
    except AuthenticationError as e:
        return render(request, "login.html", {"error": str(e)}, status=401)
    response = _see_other("/login/totp")
    set_cookie(response, pending)
    return response


@router.get("/login/totp", response_class=HTMLResponse)
def totp_page(request: Request) -> Response:
    """The second-factor form."""
    return _with_cookie(request, "totp.html", {})


@router.post("/login/totp", response_class=HTMLResponse)
async def login_totp(
    request: Request,
    gw: GatewayDep,
    peer: ClientAddress,
    code: Annotated[str, Form(max_length=64)],
) -> Response:
    """Step 2: a TOTP (or recovery) code; the session id rotates again."""
    pending = request.cookies.get(COOKIE, "")
    try:
        session = await run_in_threadpool(gw.users.login_second_factor, pending, code, peer)
    except ThrottledError as e:
        page = render(request, "totp.html", {"error": str(e)}, status=429)
        page.headers["Retry-After"] = str(max(1, round(e.retry_after)))
        return page
    except AuthenticationError as e:
        return render(request, "totp.html", {"error": str(e)}, status=401)
    view = await run_in_threadpool(gw.users.sessions.check, session, touch=False)
    response = _see_other(home_of(view.role))
    set_cookie(response, session)
    return response


@router.post("/logout")
async def logout(request: Request, gw: GatewayDep) -> Response:
    """End the session on the server (its keys are wiped), then forget the cookie."""
    session = request.cookies.get(COOKIE, "")
    if session:
        try:
            view = await run_in_threadpool(gw.users.sessions.check, session, touch=False)
            actor = view.username
        except SessionError:  # already over (or only the login page's anonymous cookie)
            actor = "anonymous"
        await run_in_threadpool(gw.users.logout, session, actor)
    response = _see_other("/login")
    clear_cookie(response)
    return response


@router.get("/enroll/{token}", response_class=HTMLResponse)
def enroll_page(request: Request, token: str, gw: GatewayDep) -> Response:
    """Choose a password, scan the TOTP QR code (the secret also as text), confirm a code."""
    try:
        offer = gw.users.offer(token)
    except EnrollmentError as e:
        return render(request, "message.html", {"title": "Enrollment", "text": str(e)}, status=404)
    return _with_cookie(request, "enroll.html", {"offer": offer, "token": token})


@router.post("/enroll/{token}", response_class=HTMLResponse)
async def enroll(
    request: Request,
    token: str,
    gw: GatewayDep,
    password: Annotated[str, Form(max_length=1024)],
    password_again: Annotated[str, Form(max_length=1024)],
    code: Annotated[str, Form(max_length=64)],
) -> Response:
    """Finish the enrollment; the ten recovery codes are shown once."""
    try:
        offer = await run_in_threadpool(gw.users.offer, token)
    except EnrollmentError as e:
        return render(request, "message.html", {"title": "Enrollment", "text": str(e)}, status=404)
    ctx: dict[str, object] = {"offer": offer, "token": token}
    if password != password_again:
        return render(request, "enroll.html", {**ctx, "error": "the passwords differ"}, status=400)
    try:
        codes = await run_in_threadpool(gw.users.enroll, token, password, code)
    except InvalidInputError as e:
        return render(request, "enroll.html", {**ctx, "error": str(e)}, status=400)
    return render(request, "enrolled.html", {"codes": codes, "username": offer.username})
