"""Patient and doctor pages: my studies (shared with me), a study with download, share and
revoke. Server-rendered; forms only (no script needed), each with its CSRF token.

Thin: every page is one ``portal.library`` call; a study the caller may not see renders
the same "not found" page as an unknown UID.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from gateway.access import Role
from portal import library
from portal.deps import Caller, GatewayDep, PageCallerDep
from portal.problems import ProblemError
from portal.routers.auth import home_of
from portal.templating import render

router = APIRouter(tags=["pages"], include_in_schema=False)


def _not_found(request: Request, me: Caller) -> Response:
    return render(
        request,
        "message.html",
        {"title": "Not found", "text": "There is no such study."},
        me=me,
        status=404,
    )


@router.get("/")
def home(request: Request) -> RedirectResponse:
    """The login page, or one's own start page (``/login`` sends there)."""
    return RedirectResponse("/studies" if request.cookies else "/login", status_code=303)


@router.get("/studies", response_class=HTMLResponse)
def my_studies(request: Request, me: PageCallerDep, gw: GatewayDep) -> Response:
    """A patient's studies, or what is shared with a doctor."""
    if me.principal.role not in (Role.PATIENT, Role.DOCTOR):
        return RedirectResponse(home_of(me.principal.role), status_code=303)
    records = library.list_studies(gw, me)
    title = "Shared with me" if me.principal.role is Role.DOCTOR else "My studies"
    return render(request, "studies.html", {"studies": records, "title": title}, me=me)


@router.get("/studies/{study_uid}", response_class=HTMLResponse)
def study_page(
    request: Request, study_uid: str, me: PageCallerDep, gw: GatewayDep, q: str = ""
) -> Response:
    """One study: its series, Download, and for its owner the shares and a doctor search."""
    try:
        view = library.study_view(gw, me, study_uid)
        doctors = library.find_doctors(gw, me, study_uid, q[:100]) if view.owner and q else []
    except ProblemError as e:
        if e.slug == "not-found":
            return _not_found(request, me)
        raise
    return render(
        request,
        "study.html",
        {"view": view, "study": view.detail.study, "q": q, "doctors": doctors},
        me=me,
    )


def _back(study_uid: str, note: str = "") -> RedirectResponse:
    url = f"/studies/{quote(study_uid)}"
    return RedirectResponse(url + (f"?note={quote(note)}" if note else ""), status_code=303)


@router.post("/studies/{study_uid}/shares")
async def share_form(
    request: Request,
    study_uid: str,
    me: PageCallerDep,
    gw: GatewayDep,
    doctor: Annotated[str, Form(max_length=200)],
    expires: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    """Share with the doctor chosen (optional expiry date)."""
    try:
        until = date.fromisoformat(expires) if expires else None
    except ValueError:
        raise ProblemError("invalid-input", "expires: use YYYY-MM-DD") from None
    try:
        await run_in_threadpool(library.share, gw, me, study_uid, doctor, until)
    except ProblemError as e:
        if e.slug == "not-found" and "doctor" not in e.detail:
            return _not_found(request, me)
        raise
    return _back(study_uid)


@router.post("/studies/{study_uid}/shares/{doctor}/revoke")
async def revoke_form(
    request: Request, study_uid: str, doctor: str, me: PageCallerDep, gw: GatewayDep
) -> Response:
    """Revoke the doctor's access."""
    try:
        await run_in_threadpool(library.revoke, gw, me, study_uid, doctor)
    except ProblemError as e:
        if e.slug == "not-found" and "doctor" not in e.detail:
            return _not_found(request, me)
        raise
    return _back(study_uid)
