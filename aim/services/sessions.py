"""Sign-in sessions: short-lived access tokens and rotating, single-use refresh tokens.

Both tokens are HS256 JWTs (PyJWT) with a `typ` claim, `access` or `refresh`, so one kind is
rejected where the other is expected. The signing key is derived from the instance secret with a
label, so a token cannot be mistaken for a keyset cursor or anything else signed with that secret.

- An access token lives 15 minutes and names its session (`sid`). Checking it reads the session
  from the `sessions` cache, so logout and revocation reach every process at once (within 30 s
  while Redis is unreachable, the in-process cache's longest TTL).
- A refresh token lives 24 hours and is stored only as its SHA-256. Using it marks it used and
  returns a new pair. Presenting a used refresh token again revokes the whole session, because
  then both the client and someone else have a copy, and the server cannot tell which is which.
- A session ends 30 days after sign-in however often it is refreshed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

from aim.db.pool import Database
from aim.services import audit, users
from aim.services.actor import Actor
from aim.services.users import SESSIONS_CACHE, AuthenticationFailed

logger = logging.getLogger(__name__)

ACCESS_TOKEN_LIFETIME = timedelta(minutes=15)
REFRESH_TOKEN_LIFETIME = timedelta(hours=24)
SESSION_MAX_LIFETIME = timedelta(days=30)
ACCESS = "access"
REFRESH = "refresh"
ISSUER = "aim"
ALGORITHM = "HS256"
# Tolerated clock difference between API replicas when checking exp and iat.
CLOCK_LEEWAY = timedelta(seconds=30)
MAX_TOKEN_LENGTH = 4096
_KEY_LABEL = b"aim.api.jwt.v1"


@dataclass(frozen=True)
class TokenPair:
    """The token pair of a sign-in or refresh. The refresh token is shown to the client only."""

    access_token: str
    refresh_token: str
    access_expires_at: datetime
    refresh_expires_at: datetime
    session_id: uuid.UUID

    @property
    def expires_in(self) -> int:
        """Seconds until the access token expires."""
        return max(int((self.access_expires_at - datetime.now(timezone.utc)).total_seconds()), 0)

    def __repr__(self) -> str:  # keeps the tokens out of logs and tracebacks
        return f"TokenPair(session_id={self.session_id})"


@dataclass(frozen=True)
class SessionInfo:
    """An active session and its user, as the API needs them per request."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID
    email: str
    role: str


def signing_key(secret: bytes) -> bytes:
    """Derive the JWT HMAC key from the instance secret (domain-separated by a fixed label)."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _encode(secret: bytes, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, signing_key(secret), algorithm=ALGORITHM)


def decode_token(secret: bytes, token: str, expected_type: str) -> dict[str, Any]:
    """Verify a token's signature, expiry and type and return its claims, or raise AuthenticationFailed.

    Reasons: `expired_token`, `wrong_token_type` (an access token where a refresh token is
    expected, or the other way round) and `invalid_token` (malformed, altered, or signed by another
    instance).
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise AuthenticationFailed("invalid_token", f"the {expected_type} token is malformed; sign in again")
    try:
        claims = jwt.decode(
            token, signing_key(secret), algorithms=[ALGORITHM], issuer=ISSUER,
            leeway=CLOCK_LEEWAY, options={"require": ["exp", "iat", "sub", "typ", "sid", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        hint = "use the refresh token at /api/v1/auth/refresh" if expected_type == ACCESS else "sign in again"
        raise AuthenticationFailed("expired_token", f"the {expected_type} token has expired; {hint}") from None
    except jwt.InvalidTokenError as exc:
        raise AuthenticationFailed("invalid_token", f"the {expected_type} token is invalid ({exc}); sign in again") from None
    if claims.get("typ") != expected_type:
        raise AuthenticationFailed(
            "wrong_token_type", f"a {claims.get('typ')!r} token was sent where a {expected_type} token is expected"
        )
    try:
        claims["sid"] = uuid.UUID(str(claims["sid"]))
        claims["sub"] = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise AuthenticationFailed("invalid_token", f"the {expected_type} token names no valid session; sign in again") from None
    return claims


def _issue_pair(
    db: Database, conn, secret: bytes, session: dict[str, Any], user: dict[str, Any], now: datetime
) -> TokenPair:
    access_expires = now + ACCESS_TOKEN_LIFETIME
    refresh_expires = min(now + REFRESH_TOKEN_LIFETIME, session["expires_at"])
    common = {"iss": ISSUER, "sub": str(user["id"]), "sid": str(session["id"]), "org": str(user["organization_id"]),
              "iat": now}
    access = _encode(secret, {**common, "typ": ACCESS, "exp": access_expires, "role": user["role"]})
    # The random jti makes every refresh token unique, even two issued in the same second.
    refresh = _encode(secret, {**common, "typ": REFRESH, "exp": refresh_expires, "jti": secrets.token_urlsafe(32)})
    db.execute(
        "refresh_tokens.insert",
        "INSERT INTO refresh_tokens (session_id, token_hash, issued_at, expires_at) VALUES (%s, %s, %s, %s)",
        (session["id"], _hash_token(refresh), now, refresh_expires),
        conn=conn,
    )
    return TokenPair(access, refresh, access_expires, refresh_expires, session["id"])


def login(
    db: Database, secret: bytes, email: object, password: object, *, ip_address: str | None = None,
    user_agent: str | None = None, request_id: str | None = None,
) -> TokenPair:
    """Check the credentials, start a session and return its first token pair. Audited.

    Raises AuthenticationFailed("invalid_credentials") for a wrong email or password.
    """
    try:
        user = users.authenticate(db, email, password)
    except AuthenticationFailed:
        _audit_failed_login(db, email, ip_address, user_agent, request_id)
        raise
    now = datetime.now(timezone.utc)
    actor = Actor("user", str(user["id"]), role=user["role"], ip_address=ip_address, user_agent=user_agent,
                  request_id=request_id)
    with db.transaction() as conn:
        session = db.fetch_one(
            "user_sessions.insert",
            """INSERT INTO user_sessions (organization_id, user_id, created_at, expires_at, ip_address, user_agent)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id, expires_at""",
            (user["organization_id"], user["id"], now, now + SESSION_MAX_LIFETIME, ip_address, user_agent),
            conn=conn,
        )
        assert session is not None
        pair = _issue_pair(db, conn, secret, session, user, now)
        audit.record(conn, user["organization_id"], actor, "user.login", "session", str(session["id"]))
    logger.info("user %s signed in, session %s", user["id"], session["id"])
    return pair


def _audit_failed_login(db: Database, email: object, ip_address, user_agent, request_id) -> None:
    # Only a known email has an organization to file the audit row under; unknown ones are logged.
    row = None
    if isinstance(email, str) and len(email) <= users.MAX_EMAIL_LENGTH:
        row = db.fetch_one("users.org_by_email", "SELECT id, organization_id FROM users WHERE lower(email) = lower(%s)",
                           (email.strip(),))
    if row is None:
        logger.info("sign-in failed for an unknown email from %s", ip_address or "unknown address")
        return
    actor = Actor("user", str(row["id"]), ip_address=ip_address, user_agent=user_agent, request_id=request_id)
    with db.transaction() as conn:
        audit.record(conn, row["organization_id"], actor, "user.login", "user", str(row["id"]), result="failure")
    logger.info("sign-in failed for user %s from %s", row["id"], ip_address or "unknown address")


def refresh(
    db: Database, secret: bytes, refresh_token: object, *, ip_address: str | None = None,
    user_agent: str | None = None, request_id: str | None = None,
) -> TokenPair:
    """Exchange a refresh token for a new pair and mark it used.

    Raises AuthenticationFailed with `refresh_token_reused` (the session is revoked as well),
    `session_revoked`, `session_expired`, `invalid_credentials` (the user was deactivated) or a
    reason from `decode_token`.
    """
    claims = decode_token(secret, refresh_token, REFRESH)  # type: ignore[arg-type]
    now = datetime.now(timezone.utc)
    reused = False
    with db.transaction() as conn:
        row = db.fetch_one(
            "refresh_tokens.lock",
            """SELECT t.id, t.used_at, s.id AS session_id, s.revoked_at, s.expires_at, s.organization_id, s.user_id
               FROM refresh_tokens t JOIN user_sessions s ON s.id = t.session_id
               WHERE t.token_hash = %s FOR UPDATE OF t, s""",
            (_hash_token(refresh_token),),  # type: ignore[arg-type]
            conn=conn,
        )
        if row is None or row["session_id"] != claims["sid"]:
            raise AuthenticationFailed("invalid_token", "the refresh token is not known; sign in again")
        actor = Actor("user", str(row["user_id"]), ip_address=ip_address, user_agent=user_agent, request_id=request_id)
        if row["revoked_at"] is not None:
            raise AuthenticationFailed("session_revoked", "the session was signed out or revoked; sign in again")
        if row["used_at"] is not None:
            _revoke_locked(db, conn, row["session_id"], "refresh token reused")
            audit.record(conn, row["organization_id"], actor, "session.revoke", "session", str(row["session_id"]),
                         result="denied", details={"reason": "refresh token reused"})
            reused = True
        elif row["expires_at"] <= now:
            raise AuthenticationFailed("session_expired", "the session reached its maximum lifetime; sign in again")
        else:
            user = db.fetch_one(
                "users.for_refresh",
                f"SELECT {users.USER_COLUMNS} FROM users WHERE id = %s AND is_active",
                (row["user_id"],),
                conn=conn,
            )
            if user is None:
                raise AuthenticationFailed("invalid_credentials", "the user was deactivated; ask an admin")
            db.execute("refresh_tokens.use", "UPDATE refresh_tokens SET used_at = %s WHERE id = %s", (now, row["id"]),
                       conn=conn)
            db.execute("user_sessions.refreshed", "UPDATE user_sessions SET last_refreshed_at = %s WHERE id = %s",
                       (now, row["session_id"]), conn=conn)
            pair = _issue_pair(db, conn, secret, {"id": row["session_id"], "expires_at": row["expires_at"]}, user, now)
    if reused:
        _forget(row["session_id"])
        logger.warning("refresh token reuse on session %s of user %s; session revoked", row["session_id"], row["user_id"])
        raise AuthenticationFailed(
            "refresh_token_reused", "this refresh token was already used, so the session was revoked; sign in again"
        )
    return pair


def logout(
    db: Database, secret: bytes, session_id: uuid.UUID, organization_id: uuid.UUID, actor: Actor
) -> bool:
    """Revoke a session of the organization, so its refresh and access tokens stop working. Audited.

    Return False when the session was already revoked or does not exist.
    """
    with db.transaction() as conn:
        revoked = db.fetch_value(
            "user_sessions.lock",
            "SELECT id FROM user_sessions WHERE id = %s AND organization_id = %s AND revoked_at IS NULL FOR UPDATE",
            (session_id, organization_id),
            conn=conn,
        )
        if revoked is None:
            return False
        _revoke_locked(db, conn, session_id, "signed out")
        audit.record(conn, organization_id, actor, "user.logout", "session", str(session_id))
    _forget(session_id)
    logger.info("session %s signed out by %s", session_id, actor.label)
    return True


def _revoke_locked(db: Database, conn, session_id: uuid.UUID, reason: str) -> None:
    db.execute(
        "user_sessions.revoke",
        "UPDATE user_sessions SET revoked_at = now(), revoke_reason = %s WHERE id = %s AND revoked_at IS NULL",
        (reason, session_id),
        conn=conn,
    )


class _NoSession(Exception):
    """The session is unknown. Raised out of the cache's compute so a miss is not cached."""


def load_session(db: Database, session_id: uuid.UUID) -> SessionInfo:
    """Return the active session with its user's current role, from the `sessions` cache.

    Raises AuthenticationFailed: `session_revoked`, `session_expired`, `invalid_credentials`
    (the user is deactivated) or `invalid_token` (no such session).
    """

    def compute() -> dict[str, Any]:
        row = db.fetch_one(
            "user_sessions.load",
            """SELECT s.id, s.user_id, s.organization_id, s.revoked_at, s.expires_at, u.email, u.role, u.is_active
               FROM user_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = %s""",
            (session_id,),
        )
        if row is None:
            raise _NoSession()
        return row

    try:
        row = _cache().get_or_compute(SESSIONS_CACHE, _session_key(session_id), compute)
    except _NoSession:
        raise AuthenticationFailed("invalid_token", "the token names an unknown session; sign in again") from None
    return _active_session(row)


def load_session_from_memory(session_id: uuid.UUID) -> SessionInfo | None:
    """Return what `load_session` returns when the session is in this process's L1 cache, else None.

    Makes no Redis or PostgreSQL call, so async code may call it on the event loop.
    """
    row = _cache().get_local(SESSIONS_CACHE, _session_key(session_id), shared=True)
    return None if row is None else _active_session(row)


def _active_session(row: dict[str, Any]) -> SessionInfo:
    if row["revoked_at"] is not None:
        raise AuthenticationFailed("session_revoked", "the session was signed out or revoked; sign in again")
    if row["expires_at"] <= datetime.now(timezone.utc):
        raise AuthenticationFailed("session_expired", "the session reached its maximum lifetime; sign in again")
    if not row["is_active"]:
        raise AuthenticationFailed("invalid_credentials", "the user was deactivated; ask an admin")
    return SessionInfo(row["id"], row["user_id"], row["organization_id"], row["email"], row["role"])


def _session_key(session_id: uuid.UUID) -> str:
    return f"session:{session_id}"


def _forget(session_id: uuid.UUID) -> None:
    _cache().invalidate(SESSIONS_CACHE, _session_key(session_id))


def _cache():
    from aim.cache import get_cache

    return get_cache()
