"""QIDO-RS (PS3.18 10.6): search studies, series and instances among what the caller may see.

Thin: each route names its level and scope and hands the query string to
``portal.dicomweb.query``. Answers are ``application/dicom+json`` (200), or 204 with no body
when nothing matched (also the empty page that ends paging); a ``Warning`` header says when
the result was cut by ``limit`` or a parameter was not honoured. Accept must allow
``application/dicom+json`` (``application/json`` and ``*/*`` do): anything else is 406.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from portal.deps import GatewayDep
from portal.dicomweb.deps import DicomwebCallerDep
from portal.dicomweb.query import Scope, search
from portal.dicomweb.render import dicom_json_response

router = APIRouter()
ROOT = "/dicom-web"  # portal.dicomweb.PREFIX (that package imports this module first)


def _answer(request: Request, gw: GatewayDep, caller: DicomwebCallerDep, scope: Scope) -> Response:
    public = gw.settings.accounts.public_url  # as users reach it (behind a proxy too)
    root = (public or str(request.base_url).rstrip("/")) + ROOT
    answer = search(gw, caller, scope, request.query_params.multi_items(), root)
    return dicom_json_response(request, answer.body, answer.warnings)


@router.get("/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, gw: GatewayDep, caller: DicomwebCallerDep) -> Response:
    """Studies the caller may see that match every key."""
    return _answer(request, gw, caller, Scope("study"))


@router.get("/series", summary="QIDO-RS: search for series in all studies")
def search_all_series(request: Request, gw: GatewayDep, caller: DicomwebCallerDep) -> Response:
    """Series of every visible study; each result carries its study's attributes."""
    return _answer(request, gw, caller, Scope("series"))


@router.get("/instances", summary="QIDO-RS: search for instances in all studies")
def search_all_instances(request: Request, gw: GatewayDep, caller: DicomwebCallerDep) -> Response:
    """Instances of every visible study; each with its series' and study's attributes."""
    return _answer(request, gw, caller, Scope("instance"))


@router.get("/studies/{study_uid}/series", summary="QIDO-RS: search for a study's series")
def search_series(
    study_uid: str, request: Request, gw: GatewayDep, caller: DicomwebCallerDep
) -> Response:
    """404 for a study the caller may not see, exactly as for an unknown UID."""
    return _answer(request, gw, caller, Scope("series", study_uid))


@router.get("/studies/{study_uid}/instances", summary="QIDO-RS: search for a study's instances")
def search_study_instances(
    study_uid: str, request: Request, gw: GatewayDep, caller: DicomwebCallerDep
) -> Response:
    """Instances of one study, each with its series' attributes."""
    return _answer(request, gw, caller, Scope("instance", study_uid))


@router.get(
    "/studies/{study_uid}/series/{series_uid}/instances",
    summary="QIDO-RS: search for a series' instances",
)
def search_instances(
    study_uid: str,
    series_uid: str,
    request: Request,
    gw: GatewayDep,
    caller: DicomwebCallerDep,
) -> Response:
    """404 for a study or series the caller may not see, exactly as for an unknown UID."""
    return _answer(request, gw, caller, Scope("instance", study_uid, series_uid))
