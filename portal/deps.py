"""FastAPI dependencies: the gateway a route serves, and who is asking.

``current_principal`` is the one authentication dependency of the portal, the API and (issue
#10) DICOMweb: a bearer token (``Authorization: Bearer``, from ``POST /api/token``) or the
browser's session cookie, checked on the server on every request (``Sessions.check``: ended,
idle, expired, suspended all stop here at once), and the principal with the user's own
unlocked key provider. Pages use ``page_principal``, which sends a browser without a session
to the login page instead of answering 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from gateway.access import Principal
from gateway.accounts.errors import SessionError
from gateway.accounts.facts import principal as principal_of
from gateway.accounts.keyprovider import UserKeyProvider, key_provider
from gateway.accounts.sessions import ACCESS, BROWSER, SessionView
from gateway.service import Gateway
from portal.csrf import COOKIE
from portal.problems import ProblemError


def get_gateway(request: Request) -> Gateway:
    """The Gateway the app was created for (``create_app`` puts it on ``app.state``)."""
    return cast(Gateway, request.app.state.gateway)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def client_address(request: Request) -> str:
    """The peer's address, for logs and the audit trail."""
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the checked session or token, and its principal."""

    view: SessionView
    principal: Principal
    secret: str  # the session id or access token (what logout ends); never logged
    bearer: bool

    @property
    def username(self) -> str:
        """The account's login name (the audit trail's actor)."""
        return self.view.username

    def keys(self, gw: Gateway) -> UserKeyProvider:
        """The user's own key provider (a new one per request: a revoke counts at once)."""
        return key_provider(gw.db, self.view)


class LoginRequired(Exception):  # noqa: N818 - a control-flow signal, not an error
    """A page was asked for without a session: the app answers with a redirect to /login."""


def _authenticate(request: Request, gw: Gateway) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    try:
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
            view = gw.users.sessions.check(token, kind=ACCESS)
            bearer = True
        else:
            token = request.cookies.get(COOKIE, "")
            if not token:
                raise SessionError("no session")
            view = gw.users.sessions.check(token, kind=BROWSER)
            bearer = False
    except SessionError:
        raise ProblemError("unauthenticated", "log in, or send a valid bearer token") from None
    return Caller(view, principal_of(gw.db, view), token, bearer)


def current_principal(request: Request, gw: GatewayDep) -> Caller:
    """The caller behind the bearer token or session cookie; 401 problem+json otherwise.

    A plain ``def``: FastAPI runs it on its thread pool, since it reads the index."""
    return _authenticate(request, gw)


def page_principal(request: Request, gw: GatewayDep) -> Caller:
    """Like ``current_principal``, for pages: no session means the login page."""
    try:
        return _authenticate(request, gw)
    except ProblemError:
        raise LoginRequired() from None


CallerDep = Annotated[Caller, Depends(current_principal)]
PageCallerDep = Annotated[Caller, Depends(page_principal)]
