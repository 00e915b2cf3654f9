"""DICOM JSON responses: content negotiation, 204 for nothing, Warning headers.

Shared by QIDO's results and (for WADO) metadata: ``application/dicom+json`` when the Accept
header allows it (``application/json``, ``application/*``, ``*/*`` and no Accept do), else 406
problem+json naming what can be served.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from portal.problems import ProblemError

MEDIA_TYPE = "application/dicom+json"
_ACCEPTABLE = frozenset({MEDIA_TYPE, "application/json", "application/*", "*/*"})


def accepts_dicom_json(accept: str | None) -> bool:
    """Whether an Accept header admits DICOM JSON (a media range with q=0 does not)."""
    if not accept or not accept.strip():
        return True
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            name, _, value = p.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if media.lower() in _ACCEPTABLE and q > 0:
            return True
    return False


def dicom_json_response(
    request: Request, body: list[dict[str, Any]], warnings: list[str] | None = None
) -> Response:
    """200 with the JSON array, or 204 (no body) for an empty one; Warning headers added."""
    if not accepts_dicom_json(request.headers.get("accept")):
        raise ProblemError(
            "not-acceptable", f"this resource is served as {MEDIA_TYPE} only", accept=MEDIA_TYPE
        )
    if not body:
        response = Response(status_code=204)
    else:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        response = Response(text.encode(), media_type=MEDIA_TYPE)
    for w in warnings or []:
        response.headers.append("Warning", w)
    return response
