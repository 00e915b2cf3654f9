"""The app factory: one FastAPI application per Gateway.

Routers live in ``portal.routers``, dependencies in ``portal.deps``; every failure is an
RFC 9457 problem document (``portal.problems``). Tests build the app around a gateway of
their own (with a fixed clock) and drive it in-process; ``ztbridge up`` serves the same app
over HTTPS (``portal.server``).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI

from gateway.service import Gateway
from portal import problems
from portal.routers import posture, system


def _version() -> str:
    try:
        return version("ztbridge")
    except PackageNotFoundError:
        return "unknown"


def create_app(gateway: Gateway) -> FastAPI:
    """The portal application serving ``gateway``."""
    app = FastAPI(
        title="ztbridge",
        version=_version(),
        docs_url=None,  # the interactive docs load scripts from a CDN: not on a PACS network
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.gateway = gateway
    problems.install(app)
    app.include_router(system.router)
    app.include_router(posture.router)
    return app
