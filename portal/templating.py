"""Server-rendered pages: Jinja2 templates (autoescaped) under ``portal/templates``.

Every page gets the CSRF token of the browser's session (``csrf``) for its forms and the
logged-in account (``me``, or None); nothing inline is ever script or style (the CSP forbids
both): the look lives in ``portal/static/portal.css``.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.templating import Jinja2Templates

from portal.csrf import page_token
from portal.deps import Caller
from portal.problems import problem_response

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def dicom_date(value: str | None) -> str:
    """YYYYMMDD as YYYY-MM-DD (what a person reads); anything else as it is."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or ""


templates.env.filters["dicom_date"] = dicom_date


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    me: Caller | None = None,
    status: int = 200,
    cookie: str | None = None,
) -> Response:
    """The page ``name`` (``cookie``: the session cookie it will be sent with, when the
    response sets a new one). An error page goes to browsers (``Accept: text/html``) only:
    any other client gets the problem+json document every portal error is."""
    ctx: dict[str, Any] = {"csrf": page_token(request, cookie), "me": me, **(context or {})}
    if status >= 400 and "text/html" not in request.headers.get("accept", ""):
        detail = ctx.get("error") or ctx.get("text")
        return problem_response(request, status, HTTPStatus(status).phrase, detail)
    return templates.TemplateResponse(request, name, ctx, status_code=status)
