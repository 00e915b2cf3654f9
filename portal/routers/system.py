"""Small endpoints about the gateway itself: its time, and the problem types it answers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.posture.report import format_time
from portal.deps import GatewayDep
from portal.problems import CATALOGUE, ProblemError

router = APIRouter(tags=["system"])


@router.get("/api/v1/time", summary="The gateway's clock")
def get_time(gw: GatewayDep) -> dict[str, Any]:
    """The gateway's current time, so an agent can measure its host's clock offset."""
    now = gw.clock.now()
    return {"now": format_time(now), "unix_ms": round(now.timestamp() * 1000)}


@router.get("/health", summary="For load balancers")
def health() -> dict[str, str]:
    """200 while the process serves requests (no authentication, nothing about the data)."""
    return {"status": "ok"}


@router.get("/problems/{slug}", summary="What a problem type means")
def get_problem(slug: str) -> dict[str, Any]:
    """The description of one of our RFC 9457 problem types (their ``type`` URIs land here)."""
    if slug not in CATALOGUE:
        raise ProblemError("not-found", f"no problem type {slug!r}")
    status, title, description = CATALOGUE[slug]
    return {
        "type": f"/problems/{slug}",
        "title": title,
        "status": status,
        "description": description,
    }
