"""The studies API: list, detail, ZIP download, share and revoke.

``GET /api/studies``, ``GET /api/studies/{uid}``, ``GET /api/studies/{uid}/archive``,
``PUT`` and ``DELETE /api/studies/{uid}/shares/{doctor}``. Each is one call of
``portal.library`` (decide, audit, core service); another user's study is a 404 identical
to an unknown UID's in every one of them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from gateway.search import StudyRecord
from portal import library
from portal.deps import CallerDep, GatewayDep
from portal.templating import HERE

router = APIRouter(prefix="/api/studies", tags=["studies"])


class ShareRequest(BaseModel):
    """``PUT .../shares/{doctor}``'s optional body."""

    expires: date | None = None


def _summary(r: StudyRecord) -> dict[str, Any]:
    return {
        "study_uid": r.study_uid,
        "study_date": r.study_date,
        "modalities": list(r.modalities),
        "description": r.description,
        "patient_name": r.patient_name,
        "num_series": r.num_series,
        "num_instances": r.num_instances,
    }


@router.get("", summary="The studies the caller may see")
def list_studies(caller: CallerDep, gw: GatewayDep) -> list[dict[str, Any]]:
    """A patient's own studies, a doctor's live shares; nobody else sees any."""
    return [_summary(r) for r in library.list_studies(gw, caller)]


@router.get("/{study_uid}", summary="One study, its series and (for its owner) its shares")
def get_study(study_uid: str, caller: CallerDep, gw: GatewayDep) -> dict[str, Any]:
    """404 for a study the caller may not see, exactly as for an unknown UID."""
    view = library.study_view(gw, caller, study_uid)
    out = _summary(view.detail.study)
    out["anchored"] = view.detail.study.anchored
    out["series"] = [
        {
            "series_uid": s.series_uid,
            "modality": s.modality,
            "series_number": s.series_number,
            "description": s.description,
            "num_instances": s.num_instances,
        }
        for s in view.detail.series
    ]
    if view.owner:
        out["shares"] = [
            {"doctor": s.doctor, "name": s.doctor_name, "expires_at": s.expires_at}
            for s in view.shares
        ]
    return out


@router.get("/{study_uid}/archive", summary="The study's original files as a ZIP")
def get_archive(
    study_uid: str, caller: CallerDep, gw: GatewayDep, dicomdir: bool = False
) -> StreamingResponse:
    """Streamed: every instance decrypted with the caller's own key as it is sent.
    ``?dicomdir=1``: a DICOMDIR media layout (the files under File-set names, with the
    DICOMDIR that indexes them)."""
    chunks = library.archive(gw, caller, study_uid, dicomdir=dicomdir)
    name = library.archive_name(study_uid, dicomdir)
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


PLACEHOLDER = (HERE / "static" / "placeholder.svg").read_bytes()


@router.get("/{study_uid}/preview", summary="A small image of the study's middle instance")
def get_preview(study_uid: str, caller: CallerDep, gw: GatewayDep) -> Response:
    """PNG, or a placeholder SVG for anything that cannot be decoded (never an error)."""
    png = library.preview(gw, caller, study_uid)
    if png is None:
        return Response(PLACEHOLDER, media_type="image/svg+xml")
    return Response(png, media_type="image/png")


@router.put("/{study_uid}/shares/{doctor}", summary="Share the study with a doctor")
async def put_share(
    study_uid: str,
    doctor: str,
    caller: CallerDep,
    gw: GatewayDep,
    body: ShareRequest | None = None,
) -> dict[str, Any]:
    """The owning patient only; the grant is signed with the patient's own key."""
    until = body.expires if body is not None else None
    share = await run_in_threadpool(library.share, gw, caller, study_uid, doctor, until)
    return {
        "study_uid": study_uid,
        "doctor": doctor,
        "expires_at": share.expires_at,
        "tx": share.tx_hash,
    }


@router.delete("/{study_uid}/shares/{doctor}", summary="Revoke a doctor's access")
async def delete_share(
    study_uid: str, doctor: str, caller: CallerDep, gw: GatewayDep
) -> dict[str, Any]:
    """The doctor's access ends at the next request; ``revoke`` goes on-chain."""
    on_chain = await run_in_threadpool(library.revoke, gw, caller, study_uid, doctor)
    return {"study_uid": study_uid, "doctor": doctor, "revoked_on_chain": on_chain}
