"""The admin page: users (add, which shows the enrollment link; suspend; reinstate),
devices, Patient ID links. An admin manages accounts but reads no study: nothing here
touches images, and ``decide`` gives an admin none.

Thin: each form is one call of the account service.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.access import Action, Role
from gateway.accounts.links import PatientLink
from portal.authz import authorize
from portal.deps import GatewayDep, PageCallerDep
from portal.templating import render

router = APIRouter(prefix="/admin", tags=["pages"], include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Users, devices and Patient ID links."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    accounts = gw.users.all()
    links: list[tuple[str, PatientLink]] = [
        (a.username, link)
        for a in accounts
        if a.role is Role.PATIENT
        for link in gw.patient_links.of(a.id)
    ]
    return render(
        request,
        "admin.html",
        {
            "accounts": accounts,
            "devices": gw.devices.list(),
            "links": links,
            "roles": [r.value for r in Role],
        },
        me=me,
    )


@router.post("/users", response_class=HTMLResponse)
async def add_user(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    username: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=20)],
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A new account; its one-time enrollment link is shown on the page (once)."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    invitation = await run_in_threadpool(gw.users.add, username, role, name, me.username)
    return render(request, "invited.html", {"invitation": invitation}, me=me)


@router.post("/users/{username}/suspend")
async def suspend(username: str, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Suspend: every session and token of the account ends now."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    await run_in_threadpool(gw.users.suspend, username, me.username)
    return RedirectResponse("/admin", status_code=303)


@router.post("/users/{username}/reinstate")
async def reinstate(username: str, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Lift a suspension."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    await run_in_threadpool(gw.users.reinstate, username, me.username)
    return RedirectResponse("/admin", status_code=303)
