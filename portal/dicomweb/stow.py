"""STOW-RS (PS3.18 10.5): store instances through the same ``gateway.ingest`` as C-STORE.

``POST /dicom-web/studies`` and ``/dicom-web/studies/{study}``, bearer token only (a
cookie never authorizes a store: ``deps``), decided as ``Action.UPLOAD`` (technologists and
admins). Checked in this order, each refusal a problem document and nothing stored: 401,
403, 406 (Accept that allows no ``application/dicom+json``), 400 (a target study UID that is
not a UID), 415 (not ``multipart/related; type="application/dicom"``, or a part of another
type), then the body as it streams (413 past ``portal.max_body_mb`` in the connection guard
or a part past ``ingest.max_instance_mb``; 400 malformed multipart), then every part
(``gateway.stow.check_part``: 400 for a part that is not a DICOM file or carries a UID that
is not one). Only then is each instance ingested; the answer is the Store Instances
Response (``application/dicom+json``): 200, 202 or 409 (``gateway.stow``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect

from gateway import stow
from gateway.access import Action
from gateway.ingest import Origin
from gateway.service import Gateway
from gateway.validation import is_valid_uid
from portal.authz import authorize
from portal.deps import GatewayDep
from portal.dicomweb.deps import DicomwebCallerDep
from portal.dicomweb.stow_body import RelatedBody, boundary_of
from portal.problems import ProblemError

log = logging.getLogger("ztbridge.portal")

router = APIRouter()

DICOM_JSON = "application/dicom+json"
#: What a STOW-RS response may be sent as: DICOM JSON (application/json as Orthanc allows).
_ANSWERS = frozenset({b"application/dicom+json", b"application/json", b"application/*", b"*/*"})
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some stored, some refused (FailedSOPSequence)"},
    409: {"description": "none stored (FailedSOPSequence)"},
}


def accepts_dicom_json(accept: str | None) -> bool:
    """Whether an Accept header allows a DICOM JSON answer (none at all does)."""
    if not accept or not accept.strip():
        return True
    for item in accept.split(","):
        media, params = parse_options_header(item.strip())
        try:
            q = float(params.get(b"q", b"1"))
        except ValueError:
            q = 1.0
        if media.lower() in _ANSWERS and q > 0:
            return True
    return False


def _base_url(request: Request, gw: Gateway) -> str:
    """Where this DICOMweb service is (RetrieveURLs start here): ``accounts.public_url`` as
    users reach it (behind a proxy too), as QIDO-RS does; else as this client reached it."""
    public = gw.settings.accounts.public_url
    return (public or str(request.base_url).rstrip("/")) + "/dicom-web"


async def _store(request: Request, caller: Any, gw: Gateway, study: str | None) -> Response:
    await run_in_threadpool(authorize, gw, caller, Action.UPLOAD, None)
    if not accepts_dicom_json(request.headers.get("accept")):
        raise ProblemError(
            "not-acceptable", f"a STOW-RS response is {DICOM_JSON}; the Accept header allows none"
        )
    if study is not None and not is_valid_uid(study):
        raise ProblemError("invalid-input", f"the target study {study[:80]!r} is not a valid UID")
    boundary = boundary_of(request.headers.get("content-type", ""))
    body = RelatedBody(boundary, gw.settings.home, gw.ingestor.max_instance_bytes)
    try:
        try:
            async for chunk in request.stream():
                body.feed(chunk)
        except ClientDisconnect:
            # The connection guard cut the body (too large, too slow) or the client left:
            # the guard has answered, nothing was stored.
            log.info("STOW-RS from %s: body cut off; nothing stored", caller.username)
            return Response(status_code=400)
        parts = body.finish()
        origin = Origin(kind="stow", actor=caller.username)
        try:
            result = await run_in_threadpool(stow.store, gw.ingestor, parts, origin, study)
        except stow.StowRequestError as e:
            raise ProblemError("invalid-input", f"nothing was stored: {e}") from e
    finally:
        body.close()
    if result.studies and gw.anchoring is not None:
        gw.anchoring.association_ended(result.studies)  # seal and anchor them soon
    return JSONResponse(
        stow.response_document(result, _base_url(request, gw)),
        status_code=result.http_status,
        media_type=DICOM_JSON,
    )


@router.post("/studies", responses=_RESPONSES, response_class=Response)
async def store_instances(request: Request, caller: DicomwebCallerDep, gw: GatewayDep) -> Response:
    """Store Instances (PS3.18 10.5): instances of any studies."""
    return await _store(request, caller, gw, None)


@router.post("/studies/{study}", responses=_RESPONSES, response_class=Response)
async def store_study_instances(
    study: str, request: Request, caller: DicomwebCallerDep, gw: GatewayDep
) -> Response:
    """Store Instances of one study: an instance of another study is refused, not stored."""
    return await _store(request, caller, gw, study)
