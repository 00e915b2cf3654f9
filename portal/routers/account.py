"""Every role's own account: change the password, change the TOTP secret (``/account``),
the API equivalent ``POST /api/account/password``, and the Activity page (``/activity``).

Thin: each form is one call of ``gateway.accounts.changes`` after the decision
(``Action.CHANGE_CREDENTIALS``); both changes ask for the current password and a fresh code
again. Errors come back on the form (wrong password or code: 401, throttled: 429 with
Retry-After, a weak new password: 400), and as problem+json on the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gateway.access import Action
from gateway.accounts.changes import begin_totp_change, change_password, confirm_totp_change
from gateway.accounts.errors import AuthenticationError, ThrottledError
from gateway.errors import InvalidInputError
from portal.activity import PAGE_SIZE, activity
from portal.authz import authorize
from portal.deps import Caller, CallerDep, ClientAddress, GatewayDep, PageCallerDep
from portal.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)
api = APIRouter(prefix="/api/account", tags=["account"])


def _form_error(request: Request, me: Caller, e: Exception) -> Response:
    """The account page again, with what went wrong."""
    if isinstance(e, ThrottledError):
        page = render(request, "account.html", {"error": str(e)}, me=me, status=429)
        page.headers["Retry-After"] = str(max(1, round(e.retry_after)))
        return page
    status = 401 if isinstance(e, AuthenticationError) else 400
    return render(request, "account.html", {"error": str(e)}, me=me, status=status)


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """The account: who is logged in, and the two credential changes."""
    authorize(gw, me, Action.CHANGE_CREDENTIALS)
    return render(request, "account.html", {}, me=me)


@router.post("/account/password", response_class=HTMLResponse)
async def password_form(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    peer: ClientAddress,
    current_password: Annotated[str, Form(max_length=1024)],
    code: Annotated[str, Form(max_length=64)],
    new_password: Annotated[str, Form(max_length=1024)],
    new_password_again: Annotated[str, Form(max_length=1024)],
) -> Response:
    """A new password: the keys re-sealed under it, every other session ended."""
    authorize(gw, me, Action.CHANGE_CREDENTIALS)
    if new_password != new_password_again:
        return _form_error(request, me, InvalidInputError("the new passwords differ"))
    try:
        ended = await run_in_threadpool(
            change_password, gw.users, gw.audit, me.view, current_password, code, new_password, peer
        )
    except (AuthenticationError, ThrottledError, InvalidInputError) as e:
        return _form_error(request, me, e)
    text = f"Your password was changed; {ended} other session(s) and token(s) were ended."
    return render(request, "message.html", {"title": "Password changed", "text": text}, me=me)


@router.post("/account/totp", response_class=HTMLResponse)
async def totp_form(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    peer: ClientAddress,
    password: Annotated[str, Form(max_length=1024)],
    code: Annotated[str, Form(max_length=64)],
) -> Response:
    """Step 1 of a TOTP change: password and current code again; the new secret is shown."""
    authorize(gw, me, Action.CHANGE_CREDENTIALS)
    try:
        offer = await run_in_threadpool(
            begin_totp_change, gw.users, me.view, password, code, peer, gw.clock.now()
        )
    except (AuthenticationError, ThrottledError, InvalidInputError) as e:
        return _form_error(request, me, e)
    return render(request, "totp_new.html", {"offer": offer}, me=me)


@router.post("/account/totp/confirm", response_class=HTMLResponse)
async def totp_confirm(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    ticket: Annotated[str, Form(max_length=4096)],
    code: Annotated[str, Form(max_length=64)],
) -> Response:
    """Step 2: a first code of the new secret; only then does it replace the old one."""
    authorize(gw, me, Action.CHANGE_CREDENTIALS)
    try:
        await run_in_threadpool(
            confirm_totp_change, gw.users, gw.audit, me.view, ticket, code, gw.clock.now()
        )
    except InvalidInputError as e:
        return render(request, "account.html", {"error": str(e)}, me=me, status=400)
    text = "Your authenticator app's new entry is now the one to log in with."
    return render(request, "message.html", {"title": "TOTP changed", "text": text}, me=me)


@router.get("/activity", response_class=HTMLResponse)
def activity_page(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    chain_offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    """Who accessed my studies and when (audit log), and the chain's events of my records."""
    view = activity(gw, me, offset, chain_offset)
    return render(
        request,
        "activity.html",
        {"view": view, "offset": offset, "chain_offset": chain_offset, "size": PAGE_SIZE},
        me=me,
    )


class PasswordChange(BaseModel):
    """``POST /api/account/password``."""

    current_password: str = Field(max_length=1024)
    totp: str = Field(max_length=64)
    new_password: str = Field(max_length=1024)


class PasswordChanged(BaseModel):
    """How many other sessions and tokens the change ended."""

    sessions_ended: int


@api.post("/password")
async def api_password(
    body: PasswordChange, me: CallerDep, gw: GatewayDep, peer: ClientAddress
) -> PasswordChanged:
    """Change the caller's password (bearer token, or session cookie + CSRF header)."""
    authorize(gw, me, Action.CHANGE_CREDENTIALS)
    ended = await run_in_threadpool(
        change_password,
        gw.users,
        gw.audit,
        me.view,
        body.current_password,
        body.totp,
        body.new_password,
        peer,
    )
    return PasswordChanged(sessions_ended=ended)
