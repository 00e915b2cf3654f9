"""Security headers on every portal response: pages, API, problem documents, 404s and 500s.

One pure ASGI middleware (``SecurityHeaders``). Not Starlette's ``BaseHTTPMiddleware``: that
one passes every response through a memory stream and a task group, so a streamed download
would be buffered chunk by chunk behind it and its errors re-raised out of place. Here the
``http.response.start`` message gets its headers and every body message passes untouched.

It wraps the whole application, outside Starlette's ``ServerErrorMiddleware``
(``PortalApp.build_middleware_stack``): a middleware added with ``add_middleware`` sits
inside it, and the 500 that ``ServerErrorMiddleware`` renders would go out bare. The
connection guard (``portal.edge``) writes its own few responses (400, 408, 431, 503) with
the same headers from ``security_headers``.

The headers, and why:

* ``Content-Security-Policy``: scripts, styles, images and fetches from the portal itself
  only, no plugins, no ``<base>``, no framing (clickjacking), forms post only to us. Pages
  carry no inline script (issue #9), so no ``'unsafe-inline'``.
* ``Strict-Transport-Security`` (HTTPS only; ``portal.hsts_max_age_seconds``, 0: none):
  after one visit the browser never tries plain HTTP. No ``includeSubDomains``: the portal
  cannot know what else the hospital serves under its domain.
* ``X-Content-Type-Options: nosniff``: a DICOM file or a JSON body is never run as script.
* ``Referrer-Policy: same-origin``: a URL of ours (study UIDs are in paths) never leaves in
  a Referer to another site; unlike ``no-referrer``, same-origin POSTs keep their ``Origin``
  header (the Fetch standard sends ``Origin: null`` under ``no-referrer``), which a CSRF
  check may want to compare.
* ``Cross-Origin-Opener-Policy: same-origin`` and ``Cross-Origin-Resource-Policy:
  same-origin``: no other site's window keeps a handle on ours, nor embeds our responses.
* ``X-Frame-Options: DENY``: ``frame-ancestors`` for browsers that predate it.
* ``Cache-Control: no-store``: nothing the portal answers (PHI, tokens) stays in a browser
  or proxy cache.

A route may set its own ``Content-Security-Policy`` or ``Cache-Control`` (the viewer's
static files will want caching, OHIF its own policy): those two are kept when present. The
others are always ours.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none';"
    " frame-ancestors 'none'; form-action 'self'"
)
_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
)
_DEFAULTS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"cache-control", b"no-store"),
)
ROUTE_MAY_SET = frozenset(name for name, _ in _DEFAULTS)


def security_headers(https: bool, hsts_max_age: int) -> list[tuple[bytes, bytes]]:
    """Every header this module adds, for a response over HTTPS or not."""
    headers = [*_DEFAULTS, *_ALWAYS]
    if https and hsts_max_age > 0:
        headers.append((b"strict-transport-security", f"max-age={hsts_max_age}".encode()))
    return headers


def with_security_headers(
    headers: list[tuple[bytes, bytes]], https: bool, hsts_max_age: int
) -> list[tuple[bytes, bytes]]:
    """``headers`` with ours: a route's own CSP and Cache-Control kept, the rest replaced."""
    ours = security_headers(https, hsts_max_age)
    present = {name.lower() for name, _ in headers}
    keep = {name for name in ROUTE_MAY_SET if name in present}
    replaced = {name for name, _ in ours} - keep
    out = [(name, value) for name, value in headers if name.lower() not in replaced]
    out.extend((name, value) for name, value in ours if name not in keep)
    return out


class SecurityHeaders:
    """ASGI middleware: ``security_headers`` on every HTTP response of ``app``."""

    def __init__(self, app: ASGIApp, hsts_max_age: int) -> None:
        self.app = app
        self.hsts_max_age = hsts_max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; add the headers to the response's start message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                message = {
                    **message,
                    "headers": with_security_headers(headers, https, self.hsts_max_age),
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)
