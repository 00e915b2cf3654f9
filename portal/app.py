"""The app factory: one FastAPI application per Gateway.

Routers live in ``portal.routers``, dependencies in ``portal.deps``; every failure is an
RFC 9457 problem document (``portal.problems``), and every response carries the security
headers of ``portal.headers``, applied outside everything else. Tests build the app around a
gateway of their own (with a fixed clock) and drive it in-process; ``ztbridge up`` serves the
same app over HTTPS (``portal.server``) behind the connection guard (``portal.edge``).
"""

from __future__ import annotations

import secrets
from importlib.metadata import PackageNotFoundError, version

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from gateway.service import Gateway
from portal import csrf, dicomweb, problems, viewer
from portal.deps import LoginRequired
from portal.dicomweb.cors import DicomwebCors
from portal.headers import SecurityHeaders
from portal.routers import (
    account,
    admin,
    auth,
    metrics,
    pages,
    posture,
    studies,
    system,
    tokens,
)
from portal.templating import HERE


def _version() -> str:
    try:
        return version("ztbridge")
    except PackageNotFoundError:
        return "unknown"


class PortalApp(FastAPI):
    """FastAPI with the security headers wrapped around its whole middleware stack.

    ``add_middleware`` would put them inside Starlette's ``ServerErrorMiddleware``, and the
    500 it renders would leave without them.
    """

    hsts_max_age: int = 0

    def build_middleware_stack(self) -> ASGIApp:
        """The stack FastAPI builds, inside ``SecurityHeaders``."""
        return SecurityHeaders(super().build_middleware_stack(), self.hsts_max_age)


def create_app(gateway: Gateway) -> FastAPI:
    """The portal application serving ``gateway``."""
    app = PortalApp(
        title="ztbridge",
        version=_version(),
        docs_url=None,  # the interactive docs load scripts from a CDN: not on a PACS network
        redoc_url=None,
        openapi_url="/api/openapi.json",
        dependencies=[Depends(csrf.check)],  # every state-changing request, every router
    )
    app.state.gateway = gateway
    app.state.csrf_key = secrets.token_bytes(32)  # sessions end with the process anyway
    app.hsts_max_age = gateway.settings.portal.hsts_max_age_seconds
    problems.install(app)

    async def to_login(request: Request, exc: Exception) -> Response:
        return RedirectResponse("/login", status_code=303)

    app.add_exception_handler(LoginRequired, to_login)
    app.include_router(system.router)
    app.include_router(metrics.router)
    app.include_router(posture.router)
    app.include_router(tokens.router)
    app.include_router(studies.router)
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(account.router)
    app.include_router(account.api)
    app.include_router(admin.router)
    app.include_router(dicomweb.router)
    viewer.install(app, gateway.settings.viewer)
    app.add_middleware(
        DicomwebCors, origins=gateway.settings.portal.cors_origins, prefix=dicomweb.PREFIX
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
