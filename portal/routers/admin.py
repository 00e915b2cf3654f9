"""The admin pages: users (add, which shows the enrollment link; suspend; reinstate;
recover with the custodian passphrase), devices and their posture, Patient ID links (list,
add), pending anchors, and the audit log with its verification state (also for auditors).

Every page and form is decided by ``portal.authz`` (``MANAGE_ACCOUNTS`` for users and links,
``MANAGE_DEVICES`` for devices and anchoring, ``READ_AUDIT`` for the audit log). An admin
manages accounts but reads no study: nothing here touches images, and ``decide`` gives an
admin none. Thin: each page is one or two core calls (the ones ``ztbridge user``, ``device
list``/``show``, ``status`` and ``audit verify`` make).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.access import Action, Role
from gateway.accounts.ceremonies import link_account, recover_account
from gateway.accounts.links import PatientLink
from gateway.anchoring.backlog import backlog
from gateway.errors import ConfigError, CryptoError, InvalidInputError, NotFoundError
from gateway.posture.policy import NO_POLICY
from gateway.posture.show import describe
from gateway.status import device_views, ledger_line
from portal.authz import authorize
from portal.deps import Caller, GatewayDep, PageCallerDep
from portal.templating import render

router = APIRouter(prefix="/admin", tags=["pages"], include_in_schema=False)
AUDIT_PAGE = 50


def _links(gw: GatewayDep) -> list[tuple[str, PatientLink]]:
    return [
        (a.username, link)
        for a in gw.users.all()
        if a.role is Role.PATIENT
        for link in gw.patient_links.of(a.id)
    ]


def _users_page(
    request: Request, me: Caller, gw: GatewayDep, error: str = "", status: int = 200
) -> Response:
    return render(
        request,
        "admin.html",
        {
            "accounts": gw.users.all(),
            "links": _links(gw),
            "roles": [r.value for r in Role],
            "error": error,
        },
        me=me,
        status=status,
    )


@router.get("", response_class=HTMLResponse)
def admin_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Users (add, suspend, reinstate, recover) and the Patient ID links."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    return _users_page(request, me, gw)


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


@router.post("/users/{username}/recover", response_class=HTMLResponse)
async def recover(
    request: Request,
    username: str,
    me: PageCallerDep,
    gw: GatewayDep,
    passphrase: Annotated[str, Form(max_length=1024)],
) -> Response:
    """The recovery ceremony (``ztbridge user recover``): a new one-time enrollment link."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    try:
        invitation = await run_in_threadpool(recover_account, gw, username, passphrase, me.username)
    except (ConfigError, CryptoError, InvalidInputError, NotFoundError) as e:
        return _users_page(request, me, gw, str(e), 400)
    return render(request, "invited.html", {"invitation": invitation, "recovered": True}, me=me)


@router.get("/devices", response_class=HTMLResponse)
def devices_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Registered devices (``device list``) and each one's posture (``device show``)."""
    authorize(gw, me, Action.MANAGE_DEVICES)
    now = gw.clock.now()
    by_id = {d.id: d for d in gw.devices.list()}
    rows = [(v, describe(gw.posture, by_id[v.id], now)) for v in device_views(gw)]
    return render(request, "admin_devices.html", {"rows": rows, "no_policy": NO_POLICY}, me=me)


def _links_page(
    request: Request, me: Caller, gw: GatewayDep, ctx: dict[str, object], status: int = 200
) -> Response:
    patients = [a for a in gw.users.all() if a.role is Role.PATIENT]
    return render(
        request,
        "admin_links.html",
        {"links": _links(gw), "patients": patients, **ctx},
        me=me,
        status=status,
    )


@router.get("/links", response_class=HTMLResponse)
def links_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Patient ID links, and the form that adds one (``ztbridge patient link``)."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    return _links_page(request, me, gw, {})


@router.post("/links", response_class=HTMLResponse)
async def add_link(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    username: Annotated[str, Form(max_length=64)],
    patient_id: Annotated[str, Form(max_length=64)],
    issuer: Annotated[str, Form(max_length=64)] = "",
    passphrase: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Link the account; earlier studies are re-sealed to it (custodian passphrase)."""
    authorize(gw, me, Action.MANAGE_ACCOUNTS)
    try:
        report = await run_in_threadpool(
            link_account,
            gw,
            username,
            patient_id,
            issuer.strip() or None,
            passphrase,
            me.username,
        )
    except (ConfigError, CryptoError, InvalidInputError, NotFoundError) as e:
        return _links_page(request, me, gw, {"error": str(e)}, 400)
    note = (
        f"{username} is linked to Patient ID {patient_id}: {len(report.studies)} earlier"
        f" study(ies) handed over, {report.records_moved} record(s) moved on-chain."
    )
    return _links_page(request, me, gw, {"note": note})


@router.get("/anchors", response_class=HTMLResponse)
def anchors_page(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """Pending anchors: backlog, last anchor and lag (what ``ztbridge status`` shows)."""
    authorize(gw, me, Action.MANAGE_DEVICES)
    found = backlog(gw.db, gw.clock.now())
    return render(
        request,
        "admin_anchors.html",
        {"b": found, "line": ledger_line(gw), "enabled": gw.anchoring is not None},
        me=me,
    )


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    me: PageCallerDep,
    gw: GatewayDep,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """The audit log, newest first, with its verification (``ztbridge audit verify``)."""
    authorize(gw, me, Action.READ_AUDIT)
    entries = gw.audit.recent(before, AUDIT_PAGE + 1)
    problem = gw.audit.verify()
    head = gw.audit.head()
    found = backlog(gw.db, gw.clock.now())
    return render(
        request,
        "admin_audit.html",
        {
            "entries": entries[:AUDIT_PAGE],
            "more": len(entries) > AUDIT_PAGE,
            "paged": before is not None,
            "problem": problem,
            "head": head[0] if head else 0,
            "anchored_to": found.counts.audit_anchored_to,
        },
        me=me,
    )
