"""CORS for ``/dicom-web`` only, and only for the origins ``portal.cors_origins`` names.

Off by default: the viewer ztbridge serves is same-origin. A viewer served from another
origin (a hospital's own OHIF) needs its origin listed. Only the DICOMweb paths answer
preflights and carry ``Access-Control-Allow-Origin``; the portal's pages and API never do.
Credentials mode stays off: the session cookie is ``SameSite=Strict`` and never crosses
sites, so a cross-origin viewer sends a bearer token.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

METHODS = ("GET", "POST", "OPTIONS")
HEADERS = ("Authorization", "Accept", "Content-Type")
EXPOSED = ("Warning", "Content-Location", "Content-Type")


class DicomwebCors:
    """Starlette's ``CORSMiddleware`` around the app for requests under ``prefix``."""

    def __init__(self, app: ASGIApp, origins: Sequence[str], prefix: str) -> None:
        self.app = app
        self.prefix = prefix
        self.cors = (
            CORSMiddleware(
                app,
                allow_origins=list(origins),
                allow_methods=list(METHODS),
                allow_headers=list(HEADERS),
                expose_headers=list(EXPOSED),
                allow_credentials=False,
                max_age=600,
            )
            if origins
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        under = path == self.prefix or path.startswith(self.prefix + "/")
        if self.cors is not None and scope["type"] == "http" and under:
            await self.cors(scope, receive, send)
            return
        await self.app(scope, receive, send)
