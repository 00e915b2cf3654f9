"""Device posture reports: ``POST /api/v1/devices/{ae_title}/posture``.

The body is read with a cap before anything parses it (a hostile client cannot make the
gateway buffer more than ``posture.max_report_kb``); verification, freshness, replay and the
verdict are the gateway's (``PostureService.receive``), run off the event loop because they
touch the index.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from gateway.posture.report import format_time
from gateway.posture.service import Problem
from portal.deps import ClientAddress, GatewayDep
from portal.problems import ProblemError

router = APIRouter(prefix="/api/v1/devices", tags=["posture"])


async def _capped_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(Problem.TOO_LARGE, f"the report is larger than {limit // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(Problem.TOO_LARGE, f"the report is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{ae_title}/posture",
    summary="Post a signed posture report",
    response_description="The report was stored; its verdict against the device's policy",
)
async def post_posture(
    ae_title: str, request: Request, gw: GatewayDep, peer: ClientAddress
) -> dict[str, Any]:
    """Verify, judge and store one report from the device's agent (docs/posture.md)."""
    body = await _capped_body(request, gw.settings.posture.max_report_kb * 1024)
    accepted = await run_in_threadpool(gw.posture.receive, ae_title, body, peer)
    return {
        "device": accepted.device,
        "policy": accepted.policy,
        "verdict": "pass" if accepted.decision.passed else "fail",
        "reasons": list(accepted.decision.reasons),
        "notes": list(accepted.decision.notes),
        "issued_at": format_time(accepted.issued_at),
        "received_at": format_time(accepted.received_at),
    }
