"""Tokens for programs: ``POST /api/token``, ``/api/token/refresh``, ``/api/logout``.

Password and TOTP code at once give an access token (minutes) and a refresh token; a refresh
token is spent on use (a second use revokes its whole family); logout ends the family and
wipes the keys it unlocked. Unknown users get the very answer of a wrong password.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gateway.accounts.sessions import TokenPair
from portal.deps import CallerDep, ClientAddress, GatewayDep

router = APIRouter(prefix="/api", tags=["tokens"])


class TokenRequest(BaseModel):
    """``POST /api/token``'s body."""

    username: str = Field(max_length=200)
    password: str = Field(max_length=1024)
    totp: str = Field(max_length=64)


class RefreshRequest(BaseModel):
    """``POST /api/token/refresh``'s body."""

    refresh_token: str = Field(max_length=200)


def _pair(pair: TokenPair) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "token_type": pair.token_type,
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
    }


@router.post("/token", summary="Log in with password and TOTP code")
async def token(body: TokenRequest, gw: GatewayDep, peer: ClientAddress) -> dict[str, Any]:
    """An access + refresh token pair (401 problem+json for any wrong part)."""
    pair = await run_in_threadpool(
        gw.users.login_token, body.username, body.password, body.totp, peer
    )
    return _pair(pair)


@router.post("/token/refresh", summary="Spend a refresh token for a new pair")
async def refresh(body: RefreshRequest, gw: GatewayDep) -> dict[str, Any]:
    """A new pair of the same login; the refresh token given is spent."""
    return _pair(await run_in_threadpool(gw.users.sessions.refresh, body.refresh_token))


@router.post("/logout", status_code=204, summary="End the token's login")
async def logout(caller: CallerDep, gw: GatewayDep) -> Response:
    """Every token of this login ends now, and its unlocked keys are wiped."""
    await run_in_threadpool(gw.users.logout, caller.secret, caller.username)
    return Response(status_code=204)
