"""DICOMweb (PS3.18) under ``/dicom-web``: one module per service, as Orthanc's plugin does.

``qido`` (search), ``wado`` (retrieve: instances, metadata, frames, bulk data, rendered,
thumbnails) and ``stow`` (store, through the same ``gateway.ingest`` as C-STORE). Every route
authenticates with ``portal.dicomweb.deps`` (bearer token, or the session cookie for GET) and
is decided by ``portal.authz`` exactly like the portal's own API: another user's study is the
404 an unknown UID gets.
"""

from __future__ import annotations

from fastapi import APIRouter

from portal.dicomweb import qido, stow, wado

PREFIX = "/dicom-web"

router = APIRouter(prefix=PREFIX, tags=["dicomweb"])
router.include_router(qido.router)
router.include_router(wado.router)
router.include_router(stow.router)
