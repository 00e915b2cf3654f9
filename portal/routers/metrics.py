"""``GET /metrics``: the process's counters in Prometheus text format (``gateway.metrics``),
for the scrapers ``portal.scrape`` admits."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway import metrics
from portal.deps import GatewayDep
from portal.problems import ProblemError
from portal.scrape import Scrape, scrape_decision

router = APIRouter(tags=["system"])


@router.get("/metrics", summary="Prometheus metrics (configured scrapers only)")
async def get_metrics(request: Request, gw: GatewayDep) -> Response:
    """404 when off, 403 for a scraper not configured, else the text exposition."""
    client = request.client.host if request.client is not None else None
    found = scrape_decision(gw.settings.portal, client, request.headers.get("authorization"))
    if found is Scrape.OFF:
        raise StarletteHTTPException(404)  # exactly what an unknown path answers
    if found is Scrape.REFUSED:
        raise ProblemError("scrape-refused", "this address or token may not read /metrics")
    body = await run_in_threadpool(metrics.exposition, gw.db, gw.clock)
    return Response(body, media_type=metrics.CONTENT_TYPE)
