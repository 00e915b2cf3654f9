"""The OHIF viewer at ``/viewer``: OHIF's built ``dist/`` from npm, served as it ships.

The dist is never rebuilt here (``portal/viewer/package.json`` pins ``@ohif/app``; ``make
install`` puts it in ``portal/viewer/node_modules``). It is built for the site root: absolute
asset paths in ``index.html``, ``window.PUBLIC_URL="/"`` in two inline scripts, and webpack's
public path ``__webpack_require__.p = "/"`` compiled into the main bundle and each worker
bundle, from which every lazy chunk, worker, stylesheet and wasm codec is loaded. OHIF reads
``PUBLIC_URL`` and ``routerBasename`` at run time, but not webpack's public path, so serving
it under ``/viewer`` takes three exact-string rewrites, made once in memory (``ViewerDist``),
never on disk: ``index.html`` (attribute paths and ``PUBLIC_URL``), the files that set the
public path, and the one stylesheet with a root ``url(/font)``. Each rewrite checks that the
string it replaces is there, so an OHIF upgrade that changes them fails loudly in the tests
(``tests/portal/test_viewer_serving.py``) instead of loading half a viewer. The alternative,
OHIF's ~100 root-level file names served at ``/`` beside the portal's own routes, would put a
third-party name space into ours: one future chunk named like a route would shadow it.

``app-config.js`` is generated from the settings (``render_app_config``): one DICOMweb data
source at ``/dicom-web`` on the same origin (relative URLs, so it survives a reverse proxy),
no investigational-use dialog, nothing fetched from anywhere else. The viewer's requests
carry the session cookie (same origin, GET only); a bearer token passed as ``?token=`` is what
OHIF itself sends as ``Authorization: Bearer`` (its Mode route reads ``token``, sets the
header for every DICOMweb request, and removes it from the address bar).

Every response under ``/viewer`` carries the viewer's own Content-Security-Policy
(``viewer_csp``), also on worker scripts (a worker runs under the policy its script came
with): the two inline scripts by hash, ``'wasm-unsafe-eval'`` for the codecs, ``blob:`` for
the workers OHIF builds in memory, nothing from another origin, no framing. The page itself
(any path that is not a file of the dist: OHIF's client-side routes) needs a logged-in
session or a valid ``?token=``, else the login page; the files of the dist are OHIF's public
code and its generated config, which name no user and no study, and every image goes through
``/dicom-web``, which authenticates and decides each request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import mimetypes
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from gateway.accounts.errors import SessionError
from gateway.accounts.sessions import ACCESS
from gateway.errors import ConfigError
from gateway.settings import ViewerSettings
from portal.deps import LoginRequired, get_gateway, page_principal
from portal.dicomweb import PREFIX as DICOMWEB_PREFIX
from portal.problems import ProblemError

log = logging.getLogger("ztbridge.portal")

PREFIX = "/viewer"
DEFAULT_DIST = Path(__file__).parent / "viewer" / "node_modules" / "@ohif" / "app" / "dist"

_PUBLIC_PATH = b'__webpack_require__.p = "/";'
_CSS_ROOT_URL = b"url(/"
_INDEX_ATTR = re.compile(rb'\b(href|src|content)="/(?!/)')
_INDEX_PUBLIC_URL = b'window.PUBLIC_URL="/"'
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
_HASHED_NAME = re.compile(r"\.[0-9a-f]{16}\.")  # webpack's content hash: the file never changes
# Files of the dist that are not OHIF's to serve: Netlify's and `serve`'s deploy settings, and
# the two we replace.
_NOT_SERVED = frozenset({"index.html", "app-config.js", "_headers", "_redirects", "serve.json"})
_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_NO_STORE = "no-store"


class ViewerDistError(ConfigError):
    """OHIF's dist is missing, or not the layout this module knows how to serve."""


def viewer_csp(script_hashes: list[str]) -> str:
    """The viewer's Content-Security-Policy: the portal's, widened only where OHIF needs it.

    ``script-src``: the inline scripts by hash and ``'wasm-unsafe-eval'`` (the image codecs are
    WebAssembly), not ``'unsafe-eval'``. ``worker-src blob:``: OHIF builds some workers from
    in-memory code. ``style-src 'unsafe-inline'``: React components and cornerstone set inline
    styles and ``<style>`` elements (styles cannot run script). ``img-src``/``font-src``
    ``data:``/``blob:``: thumbnails and icons OHIF draws itself. ``connect-src 'self'``: the
    viewer talks to us alone (no CDN, no analytics)."""
    hashes = " ".join(f"'{h}'" for h in script_hashes)
    return (
        "default-src 'self';"
        f" script-src 'self' {hashes} 'wasm-unsafe-eval';"
        " worker-src 'self' blob:;"
        " style-src 'self' 'unsafe-inline';"
        " img-src 'self' data: blob:;"
        " font-src 'self' data:;"
        " connect-src 'self' data: blob:;"
        " object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


def render_app_config(settings: ViewerSettings, prefix: str = PREFIX) -> str:
    """OHIF's ``app-config.js``: ``window.config``, as JSON (so no value can become code).

    The data-source options say what ztbridge's DICOMweb does (issue #10): QIDO honours
    ``includefield`` and the ``*``/``?`` wildcards but not fuzzy matching; WADO-RS answers
    frames and thumbnails, and series metadata with BulkDataURIs relative to the series
    (``instances/{sop}/bulkdata/...``, OHIF's default resolution); multipart Accept headers
    are parsed per RFC 7231, so the quotes OHIF omits around ``type`` are optional.
    """
    root = DICOMWEB_PREFIX
    config: dict[str, Any] = {
        "name": "ztbridge",
        "routerBasename": prefix,
        "extensions": [],
        "modes": [],
        # OHIF's first-visit tour (a dialog over the image) off, as is the
        # investigational-use dialog: a doctor opening a study sees the study.
        "customizationService": {"global": {"ohif.tours": []}},
        "showStudyList": settings.show_study_list,
        "maxNumberOfWebWorkers": settings.max_web_workers,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "production",
        "defaultDataSourceName": "ztbridge",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "ztbridge",
                "configuration": {
                    "friendlyName": "ztbridge",
                    "name": "ztbridge",
                    "qidoRoot": root,
                    "wadoRoot": root,
                    "wadoUriRoot": root,
                    "qidoSupportsIncludeField": True,
                    "supportsFuzzyMatching": False,
                    "supportsWildcard": True,
                    "imageRendering": "wadors",
                    "thumbnailRendering": "wadors",
                    "enableStudyLazyLoad": True,
                    "staticWado": False,
                    "singlepart": "video",
                    "bulkDataURI": {"enabled": True, "relativeResolution": "series"},
                    "omitQuotationForMultipartRequest": True,
                    "dicomUploadEnabled": False,
                },
            }
        ],
    }
    body = json.dumps(config, indent=2)
    return f"/* Generated by ztbridge from its [viewer] settings. */\nwindow.config = {body};\n"


@dataclass
class ViewerDist:
    """OHIF's dist folder, with what must change to serve it under ``prefix``, in memory."""

    root: Path
    prefix: str = PREFIX
    _files: dict[str, Path] | None = field(default=None, repr=False)
    _index: tuple[bytes, list[str]] | None = field(default=None, repr=False)
    _patched: dict[str, bytes | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def files(self) -> dict[str, Path]:
        """Every servable file, by its path relative to the dist (URL form): nothing else is
        ever opened, so no request path can reach outside it."""
        if self._files is None:
            if not (self.root / "index.html").is_file():
                raise ViewerDistError(
                    f"OHIF's dist is not at {self.root}: run `make install` (it installs"
                    " portal/viewer's pinned @ohif/app), or set viewer.dist_dir"
                )
            found: dict[str, Path] = {}
            for folder, _dirs, names in os.walk(self.root):
                for name in names:
                    path = Path(folder) / name
                    rel = path.relative_to(self.root).as_posix()
                    if rel not in _NOT_SERVED:
                        found[rel] = path
            self._files = found
        return self._files

    def index(self) -> tuple[bytes, list[str]]:
        """``index.html`` for ``prefix``, and the CSP hashes of its inline scripts."""
        if self._index is None:
            self.files()
            html = (self.root / "index.html").read_bytes()
            if html.count(_INDEX_PUBLIC_URL) != 2 or not _INDEX_ATTR.search(html):
                raise ViewerDistError(
                    "OHIF's index.html does not set window.PUBLIC_URL as expected: this"
                    " version of @ohif/app needs portal/viewer.py updated"
                )
            base = self.prefix.encode() + b"/"
            html = _INDEX_ATTR.sub(lambda m: m.group(1) + b'="' + base, html)
            html = html.replace(_INDEX_PUBLIC_URL, b'window.PUBLIC_URL="' + base + b'"')
            hashes = [
                "sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode()
                for m in _INLINE_SCRIPT.finditer(html)
            ]
            self._index = (html, hashes)
        return self._index

    def csp(self) -> str:
        """The policy every response under ``prefix`` carries."""
        return viewer_csp(self.index()[1])

    def patched(self, rel: str) -> bytes | None:
        """The file's bytes rewritten for ``prefix``, or None when it needs no rewrite.

        Only the dist's top-level scripts and stylesheets can set webpack's public path or a
        root ``url(/...)``; the large subfolders (onnxruntime, the microscopy viewer) load by
        paths relative to the page and are streamed from disk untouched."""
        if "/" in rel or not rel.endswith((".js", ".css")):
            return None
        with self._lock:
            if rel not in self._patched:
                data = self.files()[rel].read_bytes()
                base = self.prefix.encode() + b"/"
                if rel.endswith(".js") and _PUBLIC_PATH in data:
                    out: bytes | None = data.replace(
                        _PUBLIC_PATH, b'__webpack_require__.p = "' + base + b'";'
                    )
                elif rel.endswith(".css") and _CSS_ROOT_URL in data:
                    out = data.replace(_CSS_ROOT_URL, b"url(" + base)
                else:
                    out = None
                self._patched[rel] = out
            return self._patched[rel]


def _dist(request: Request) -> ViewerDist:
    """The app's dist, read (a missing or unknown one: 500 naming the fix, and logged)."""
    dist = getattr(request.app.state, "viewer_dist", None)
    if not isinstance(dist, ViewerDist):
        raise ProblemError("not-found", "The resource does not exist.")
    try:
        dist.index()
    except ViewerDistError as e:
        log.error("viewer: %s", e)
        raise ProblemError("gateway-misconfigured", str(e)) from e
    return dist


def _media_type(rel: str) -> str:
    suffix = Path(rel).suffix.lower()
    return _TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"


def _logged_in(request: Request) -> bool:
    """A browser session (or bearer header), or OHIF's ``?token=`` (any case, as OHIF reads
    it) that is a live access token."""
    gw = get_gateway(request)
    token = next((v for k, v in request.query_params.multi_items() if k.lower() == "token"), "")
    if token:
        try:
            gw.users.sessions.check(token, kind=ACCESS)
        except SessionError:
            return False
        return True
    try:
        page_principal(request, gw)
    except LoginRequired:
        return False
    return True


router = APIRouter(prefix=PREFIX, include_in_schema=False, tags=["viewer"])


@router.get("")
def viewer_root(request: Request) -> Response:
    """``/viewer`` is the folder ``/viewer/`` (OHIF's relative paths need the slash)."""
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{PREFIX}/{query}", status_code=307)


@router.get("/app-config.js")
def app_config(request: Request) -> Response:
    """OHIF's configuration, from the ``[viewer]`` settings."""
    dist = _dist(request)
    settings = get_gateway(request).settings.viewer
    return Response(
        render_app_config(settings, dist.prefix),
        media_type="text/javascript",
        headers={"Content-Security-Policy": dist.csp(), "Cache-Control": _NO_STORE},
    )


@router.get("/{path:path}")
def viewer_file(request: Request, path: str) -> Response:
    """A file of the dist, or (any other path: OHIF's own routes) the viewer's page."""
    dist = _dist(request)
    csp = dist.csp()
    target = dist.files().get(path)
    if target is not None:
        cache = _IMMUTABLE if _HASHED_NAME.search(path) else _REVALIDATE
        headers = {"Content-Security-Policy": csp, "Cache-Control": cache}
        body = dist.patched(path)
        if body is not None:
            return Response(body, media_type=_media_type(path), headers=headers)
        return FileResponse(target, media_type=_media_type(path), headers=headers)
    if Path(path).suffix:
        raise ProblemError("not-found", "The resource does not exist.")
    if not _logged_in(request):
        return RedirectResponse("/login", status_code=303)
    html, _ = dist.index()
    return Response(
        html,
        media_type="text/html",
        headers={"Content-Security-Policy": csp, "Cache-Control": _NO_STORE},
    )


def viewer_url(settings: ViewerSettings) -> str:
    """Where a study page's "Open in viewer" points (OHIF's viewer route), or "" when the
    viewer is off. The study is named in the query (``StudyInstanceUIDs``), as OHIF reads it:
    a study the user may not see opens OHIF's "no study" state, since every DICOMweb request
    for it is the 404 an unknown UID gets."""
    return f"{PREFIX}/viewer" if settings.enabled else ""


def install(app: Any, settings: ViewerSettings) -> None:
    """Mount the viewer on ``app`` when enabled (its dist is read on first use)."""
    if not settings.enabled:
        return
    root = settings.dist_dir or DEFAULT_DIST
    if not (root / "index.html").is_file():
        log.warning(
            "viewer: OHIF's dist is not at %s: run `make install` (or set viewer.dist_dir)", root
        )
    app.state.viewer_dist = ViewerDist(root)
    app.include_router(router)
