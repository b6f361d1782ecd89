"""Sign-in for people: login, refresh and logout (see aim.services.sessions for the token rules)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Body, Request, Response, status

from aim.api import schemas
from aim.api.problems import STANDARD_ERRORS
from aim.api.security import (
    authenticate_blocking,
    client_address,
    enforce_rate_limit,
    get_runtime,
    request_id,
    unauthorized,
)
from aim.services import sessions
from aim.services.actor import Actor
from aim.services.users import AuthenticationFailed

router = APIRouter(prefix="/auth", tags=["auth"])


def _pair_body(pair: sessions.TokenPair) -> dict[str, Any]:
    return {"access_token": pair.access_token, "refresh_token": pair.refresh_token, "token_type": "bearer",
            "expires_in": pair.expires_in, "refresh_expires_at": pair.refresh_expires_at,
            "session_id": pair.session_id}


def _limit_by_address(request: Request) -> None:
    # Sign-in endpoints have no principal yet, so they are limited per client address.
    enforce_rate_limit(request, f"ip:{client_address(request) or 'unknown'}")


@router.post("/login", response_model=schemas.TokenPair, summary="Sign in with email and password")
def login(request: Request, body: schemas.LoginRequest) -> dict[str, Any]:
    """Return a 15-minute access token and a single-use refresh token. 401 `invalid_credentials` on failure."""
    _limit_by_address(request)
    runtime = get_runtime(request)
    try:
        pair = sessions.login(runtime.db, runtime.secret_key, body.email, body.password,
                              ip_address=client_address(request), user_agent=request.headers.get("user-agent"),
                              request_id=request_id(request))
    except AuthenticationFailed as failed:
        raise unauthorized(failed.reason, failed.message) from None
    return _pair_body(pair)


@router.post("/refresh", response_model=schemas.TokenPair, summary="Exchange a refresh token for a new pair")
def refresh(request: Request, body: schemas.RefreshRequest) -> dict[str, Any]:
    """Return a new pair and mark the refresh token used. Presenting one that was already used revokes the whole session
    (401 `refresh_token_reused`); an access token here is 401 `wrong_token_type`."""
    _limit_by_address(request)
    runtime = get_runtime(request)
    try:
        pair = sessions.refresh(runtime.db, runtime.secret_key, body.refresh_token,
                                ip_address=client_address(request), user_agent=request.headers.get("user-agent"),
                                request_id=request_id(request))
    except AuthenticationFailed as failed:
        raise unauthorized(failed.reason, failed.message) from None
    return _pair_body(pair)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
             responses={204: {"description": "The session is revoked"}, 401: STANDARD_ERRORS[401]},
             summary="Sign out")
def logout(request: Request, body: schemas.LogoutRequest | None = Body(None)) -> Response:
    """Revoke the session named by the body's refresh token, or else by the bearer access token.

    Its refresh and access tokens stop working at once.
    """
    runtime = get_runtime(request)
    if body is not None and body.refresh_token is not None:
        _limit_by_address(request)
        try:
            claims = sessions.decode_token(runtime.secret_key, body.refresh_token, sessions.REFRESH)
            organization_id = uuid.UUID(str(claims.get("org")))
        except AuthenticationFailed as failed:
            raise unauthorized(failed.reason, failed.message) from None
        except ValueError:
            raise unauthorized("invalid_token", "the refresh token names no organization; sign in again") from None
        session_id = claims["sid"]
        actor = Actor("user", str(claims["sub"]), ip_address=client_address(request),
                      user_agent=request.headers.get("user-agent"), request_id=request_id(request))
    else:
        principal = authenticate_blocking(request)
        if principal.session_id is None:
            raise unauthorized("wrong_token_type",
                               "an API key has no session to sign out of; revoke the key at /api/v1/api-keys instead")
        session_id, organization_id, actor = principal.session_id, principal.organization_id, principal.actor
    sessions.logout(runtime.db, runtime.secret_key, session_id, organization_id, actor)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
