"""Who is asking, for DICOMweb: a bearer token, or the portal's session cookie for reads.

The same ``portal.deps`` authentication as the API (one check, on the server, every
request); what differs is the cookie's reach: a cookie authorizes only safe methods (GET,
HEAD), so a page on another site can never make a logged-in browser store instances. STOW
needs a bearer token. No credentials: 401 problem+json on every endpoint.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from portal.csrf import SAFE_METHODS
from portal.deps import Caller, GatewayDep, current_principal
from portal.problems import ProblemError


def dicomweb_caller(request: Request, gw: GatewayDep) -> Caller:
    """The authenticated caller; a cookie-only caller of a state-changing method is 401."""
    caller = current_principal(request, gw)
    if not caller.bearer and request.method not in SAFE_METHODS:
        raise ProblemError("unauthenticated", "DICOMweb stores need a bearer token")
    return caller


DicomwebCallerDep = Annotated[Caller, Depends(dicomweb_caller)]
