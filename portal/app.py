"""The app factory: one FastAPI application per Gateway.

Routers live in ``portal.routers``, dependencies in ``portal.deps``; every failure is an
RFC 9457 problem document (``portal.problems``), and every response carries the security
headers of ``portal.headers``, applied outside everything else. Tests build the app around a
gateway of their own (with a fixed clock) and drive it in-process; ``ztbridge up`` serves the
same app over HTTPS (``portal.server``) behind the connection guard (``portal.edge``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from starlette.types import ASGIApp

from gateway.service import Gateway
from portal import problems
from portal.headers import SecurityHeaders
from portal.routers import posture, system


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
    )
    app.state.gateway = gateway
    app.hsts_max_age = gateway.settings.portal.hsts_max_age_seconds
    problems.install(app)
    app.include_router(system.router)
    app.include_router(posture.router)
    return app
