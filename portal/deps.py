"""FastAPI dependencies: how a route gets at the gateway it serves."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from gateway.service import Gateway


def get_gateway(request: Request) -> Gateway:
    """The Gateway the app was created for (``create_app`` puts it on ``app.state``)."""
    return cast(Gateway, request.app.state.gateway)


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def client_address(request: Request) -> str:
    """The peer's address, for logs and the audit trail."""
    return request.client.host if request.client else "unknown"


ClientAddress = Annotated[str, Depends(client_address)]
