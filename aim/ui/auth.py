"""Dashboard sign-in: local accounts, optional OIDC, role gating, and a session cookie that survives reloads.

How a session works:

- Password sign-in calls `aim.services.sessions.login`, which checks the Argon2 hash, writes a
  `user_sessions` row and an audited `user.login`. The session is then read through the `sessions`
  cache (L1 in process, L2 Redis, 24 h TTL), so every rerun checks it without a database query.
- The browser keeps a cookie `aim_session` = `<session id>.<expiry unix time>.<HMAC-SHA256>`. The MAC
  key is derived from the instance secret with its own label, so knowing a session id (it appears
  in the audit log) is not enough to forge a cookie. The cookie and the dashboard session end 24 h
  after sign-in.
- Streamlit cannot send Set-Cookie headers, so the cookie is written by a one-line script rendered
  with `st.html(..., unsafe_allow_javascript=True)`. `st.context.cookies` is read when the browser
  opens its WebSocket, so a reload (a new WebSocket) finds the cookie and restores the user.
- Sign-out revokes the session in PostgreSQL and deletes its cache entry in Redis (via
  `sessions.logout`), then clears the cookie. A stale cookie then names a revoked session and is
  refused.
- With an `[auth]` section in secrets.toml, `st.login()` is offered as well. Streamlit keeps that
  identity in its own signed cookie. The OIDC email must belong to an existing active local user,
  whose role applies. OIDC sign-in never creates a user.

Pages call `require_page("<page key>")` first. Tests sign a user in with `sign_in_session`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator, MutableMapping
from datetime import timedelta
from typing import Any

import streamlit as st

from aim.errors import AIMError, Conflict, ValidationError
from aim.runtime import get_runtime
from aim.services import organizations, sessions, users
from aim.services.actor import Actor, system
from aim.services.dashboard_queries_shell import any_user_exists, find_active_user_by_email
from aim.services.users import AuthenticationFailed
from aim.ui.access import PAGE_TITLES, can_open

logger = logging.getLogger(__name__)

USER_KEY = "aim_user"
SESSION_KEY = "aim_session"
FLASH_KEY = "aim_auth_flash"
COOKIE_SCRIPT_KEY = "aim_cookie_script"
REJECTED_COOKIE_KEY = "aim_rejected_cookie"
SHELL_RUNNING_KEY = "aim_shell_running"
# The user that `current_user` validated earlier in the same app.py run, so the page's
# `require_page` does not look the session up a second time.
RUN_USER_KEY = "aim_run_user"
COOKIE_NAME = "aim_session"
DASHBOARD_SESSION_LIFETIME = timedelta(hours=24)
_COOKIE_KEY_LABEL = b"aim.ui.session-cookie.v1"
# Session id (36) + expiry (10) + MAC (43) + separators, with room to spare.
MAX_COOKIE_LENGTH = 200
# An OIDC user has no AIM session to watch, so the local user row is re-read this often.
OIDC_RECHECK_S = 30
USER_FIELDS = ("id", "email", "role", "organization_id", "organization_name")


# --- cookie value -----------------------------------------------------------------------------


def _cookie_mac(secret: bytes, payload: str) -> str:
    key = hmac.new(secret, _COOKIE_KEY_LABEL, hashlib.sha256).digest()
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def sign_session_cookie(secret: bytes, session_id: uuid.UUID, expires_at: int) -> str:
    """Return the cookie value naming `session_id` until `expires_at` (Unix seconds)."""
    payload = f"{session_id}.{int(expires_at)}"
    return f"{payload}.{_cookie_mac(secret, payload)}"


def read_session_cookie(secret: bytes, value: object, now: float | None = None) -> tuple[uuid.UUID, int] | None:
    """Return (session id, expiry) from a cookie value, or None when it is malformed, forged or expired."""
    if not isinstance(value, str) or len(value) > MAX_COOKIE_LENGTH or value.count(".") != 2:
        return None
    session_text, expiry_text, mac = value.split(".")
    if not hmac.compare_digest(mac, _cookie_mac(secret, f"{session_text}.{expiry_text}")):
        return None
    try:
        session_id = uuid.UUID(session_text)
        expires_at = int(expiry_text)
    except ValueError:
        return None
    if expires_at <= (time.time() if now is None else now):
        return None
    return session_id, expires_at


def _cookie_script(value: str | None) -> str:
    # json.dumps quotes the assignment for JavaScript. The value itself is base64url, digits, dots and hyphens.
    if value is None:
        assignment = f"{COOKIE_NAME}=; Path=/; Max-Age=0; SameSite=Strict"
        return f"<script>document.cookie = {json.dumps(assignment)};</script>"
    max_age = int(DASHBOARD_SESSION_LIFETIME.total_seconds())
    assignment = f"{COOKIE_NAME}={value}; Path=/; Max-Age={max_age}; SameSite=Strict"
    return (
        f"<script>document.cookie = {json.dumps(assignment)}"
        " + (window.location.protocol === 'https:' ? '; Secure' : '');</script>"
    )


def render_cookie_script() -> None:
    """Write or clear the session cookie in the browser if a sign-in or sign-out asked for it.

    app.py calls this on every run. The script is rendered once and then dropped from the state.
    """
    script = st.session_state.pop(COOKIE_SCRIPT_KEY, None)
    if script:
        st.html(script, unsafe_allow_javascript=True)


# --- session state ----------------------------------------------------------------------------


def _public_user(row: dict[str, Any], organization_name: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "role": row["role"],
        "organization_id": row["organization_id"],
        "organization_name": organization_name,
    }


def sign_in_session(
    state: MutableMapping[str, Any], user: dict[str, Any], session_id: uuid.UUID | None = None,
    expires_at: int | None = None,
) -> None:
    """Mark `state` (st.session_state, or AppTest's `at.session_state`) as signed in as `user`.

    `user` needs id, email, role, organization_id and organization_name. Without `session_id` the
    user is trusted as given for the life of the state, which is what AppTest tests use. With one,
    every rerun re-checks the server session and picks up role changes.
    """
    missing = [name for name in USER_FIELDS if name not in user]
    if missing:
        raise ValidationError("user", f"missing {', '.join(missing)}; expected the fields {', '.join(USER_FIELDS)}")
    state[USER_KEY] = {name: user[name] for name in USER_FIELDS}
    if session_id is not None:
        lifetime = int(DASHBOARD_SESSION_LIFETIME.total_seconds())
        state[SESSION_KEY] = {"id": session_id, "expires_at": expires_at or int(time.time()) + lifetime}
    elif SESSION_KEY in state:
        # `del`, because AppTest's session state has no pop().
        del state[SESSION_KEY]


def _clear_state(flash: str | None = None) -> None:
    st.session_state.pop(USER_KEY, None)
    st.session_state.pop(SESSION_KEY, None)
    if flash:
        st.session_state[FLASH_KEY] = flash


def _refresh_from_session(user: dict[str, Any], session: dict[str, Any]) -> dict[str, Any] | None:
    """Re-check the server session behind `user`; return the user with its current role, or None."""
    if session["expires_at"] <= time.time():
        _clear_state("Your session reached its 24-hour limit. Sign in again.")
        st.session_state[COOKIE_SCRIPT_KEY] = _cookie_script(None)
        return None
    try:
        info = sessions.load_session(get_runtime().db, session["id"])
    except AuthenticationFailed as exc:
        logger.info("dashboard session %s ended: %s", session["id"], exc.reason)
        _clear_state(f"You were signed out: {exc.message}.")
        st.session_state[COOKIE_SCRIPT_KEY] = _cookie_script(None)
        return None
    if info.role != user["role"]:
        user = {**user, "role": info.role}
        st.session_state[USER_KEY] = user
    return user


def _restore_from_cookie() -> dict[str, Any] | None:
    """Sign in from the browser's session cookie, if it names a live session."""
    value = st.context.cookies.get(COOKIE_NAME)
    if not value or st.session_state.get(REJECTED_COOKIE_KEY) == value:
        return None
    runtime = get_runtime()
    parsed = read_session_cookie(runtime.secret_key, value)
    if parsed is None:
        st.session_state[REJECTED_COOKIE_KEY] = value
        return None
    session_id, expires_at = parsed
    try:
        info = sessions.load_session(runtime.db, session_id)
    except AuthenticationFailed as exc:
        logger.info("session cookie for session %s rejected: %s", session_id, exc.reason)
        # Remember the refusal so later reruns of this browser tab skip the lookup.
        st.session_state[REJECTED_COOKIE_KEY] = value
        return None
    organization = organizations.get(runtime.db, info.organization_id)
    user = {"id": info.user_id, "email": info.email, "role": info.role, "organization_id": info.organization_id,
            "organization_name": organization["name"]}
    sign_in_session(st.session_state, user, session_id, expires_at)
    logger.info("user %s restored session %s from cookie", info.user_id, session_id)
    return st.session_state[USER_KEY]


# --- OIDC -------------------------------------------------------------------------------------


def oidc_configured() -> bool:
    """Return True when secrets.toml has an `[auth]` section, so `st.login()` can be offered."""
    try:
        return "auth" in st.secrets
    except FileNotFoundError:
        return False
    except Exception as exc:  # StreamlitSecretNotFoundError and parse errors have no shared public base
        logger.warning("secrets.toml could not be read, OIDC sign-in is off: %s", type(exc).__name__)
        return False


def _oidc_user() -> dict[str, Any] | None:
    """Map the OIDC identity from st.user to an active local user, or return None."""
    if not oidc_configured() or not st.user.is_logged_in:
        return None
    email = st.user.get("email")
    if not isinstance(email, str) or not email:
        st.session_state[FLASH_KEY] = "The identity provider sent no email address, so no AIM user matches."
        return None
    row = find_active_user_by_email(get_runtime().db, email)
    if row is None:
        st.session_state[FLASH_KEY] = (
            f"No active AIM user has the email {email}. Ask an admin to create one, then sign in again."
        )
        return None
    user = _public_user(row, row["organization_name"])
    user["oidc_checked_at"] = time.time()
    st.session_state[USER_KEY] = user
    return user


# --- public API -------------------------------------------------------------------------------


def current_user() -> dict[str, Any] | None:
    """Return the signed-in user {id, email, role, organization_id, organization_name}, or None.

    Checks in order: this browser tab's state (re-validated against the server session), the
    session cookie, then the OIDC identity. Within one app.py run the first user found is
    reused, so the shell and the page script share one session lookup.
    """
    if st.session_state.get(SHELL_RUNNING_KEY) and RUN_USER_KEY in st.session_state:
        return st.session_state[RUN_USER_KEY]
    user = _find_current_user()
    if user is not None and st.session_state.get(SHELL_RUNNING_KEY):
        st.session_state[RUN_USER_KEY] = user
    return user


def _find_current_user() -> dict[str, Any] | None:
    user = st.session_state.get(USER_KEY)
    if user is not None:
        session = st.session_state.get(SESSION_KEY)
        if session is not None:
            return _refresh_from_session(user, session)
        if "oidc_checked_at" in user and time.time() - user["oidc_checked_at"] > OIDC_RECHECK_S:
            # Re-read the local user so a role change or deactivation applies within OIDC_RECHECK_S.
            st.session_state.pop(USER_KEY, None)
            return _oidc_user()
        return user
    user = _restore_from_cookie()
    if user is not None:
        return user
    return _oidc_user()


@contextlib.contextmanager
def shell_running() -> Iterator[None]:
    """Mark the current script run as going through app.py, for `require_page` to check."""
    st.session_state[SHELL_RUNNING_KEY] = True
    try:
        yield
    finally:
        # `del`, because AppTest's session state has no pop().
        for key in (SHELL_RUNNING_KEY, RUN_USER_KEY):
            if key in st.session_state:
                del st.session_state[key]


def _run_inside_shell() -> None:
    """Rerun through app.py when Streamlit ran a page script directly.

    Streamlit 1.67 treats an app with a pages/ directory as a "pages directory" app, which runs a
    requested page script on its own, until the first st.navigation call in the process switches
    that mode off. The first request of a fresh process for /agents would then skip the sign-in
    gate, the sidebar and the navigation. Switching the mode off and rerunning makes app.py run.
    """
    if st.session_state.get(SHELL_RUNNING_KEY):
        return
    use_navigation_mode()
    logger.info("page script ran without app.py; rerunning through the app shell")
    st.rerun()


def use_navigation_mode() -> None:
    """Switch this process out of Streamlit's pages-directory mode, so every request runs app.py.

    aim.ui.warmup calls this at server start, which saves the first deep link of a process the
    rerun that `_run_inside_shell` would otherwise need.
    """
    # NOTE: PagesManager.uses_pages_directory is internal to Streamlit; st.navigation sets the same
    # flag to False. If a later Streamlit renames it, this assignment does nothing and the first
    # deep link of a process renders without the shell until app.py has run once.
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False


def require_page(page: str) -> dict[str, Any]:
    """Return the signed-in user if their role may open `page`; otherwise show why and stop the script."""
    _run_inside_shell()
    user = current_user()
    title = PAGE_TITLES.get(page, page)
    if user is None:
        st.warning(f"Sign in to open {title}.", icon=":material/lock:")
        st.stop()
    if not can_open(user["role"], page):
        st.error(
            f"Your role {user['role']} cannot open {title}. Ask an admin if you need access.",
            icon=":material/block:",
        )
        st.stop()
    return user


def _client_details() -> tuple[str | None, str | None]:
    """Return the browser's IP address and User-Agent for the audit trail, or None for each one Streamlit lacks."""
    ip_address = st.context.ip_address
    user_agent = st.context.headers.get("User-Agent") if st.context.headers else None
    # AppTest and other runs without a browser request return placeholders that are not strings.
    return (ip_address if isinstance(ip_address, str) else None,
            user_agent if isinstance(user_agent, str) else None)


def sign_in_with_password(email: str, password: str) -> dict[str, Any]:
    """Check the credentials, start a server session, queue the cookie and return the user.

    Raises AuthenticationFailed for a wrong email or password or a deactivated user.
    """
    runtime = get_runtime()
    ip_address, user_agent = _client_details()
    pair = sessions.login(runtime.db, runtime.secret_key, email, password, ip_address=ip_address,
                          user_agent=user_agent)
    info = sessions.load_session(runtime.db, pair.session_id)
    organization = organizations.get(runtime.db, info.organization_id)
    user = {"id": info.user_id, "email": info.email, "role": info.role, "organization_id": info.organization_id,
            "organization_name": organization["name"]}
    expires_at = int(time.time() + DASHBOARD_SESSION_LIFETIME.total_seconds())
    sign_in_session(st.session_state, user, pair.session_id, expires_at)
    st.session_state[COOKIE_SCRIPT_KEY] = _cookie_script(
        sign_session_cookie(runtime.secret_key, pair.session_id, expires_at)
    )
    st.session_state.pop(FLASH_KEY, None)
    return st.session_state[USER_KEY]


def needs_first_admin() -> bool:
    """Return True while no user exists at all, so the first screen creates the admin."""
    # Once a user exists the answer stays true for this browser session, because users are
    # deactivated, never deleted.
    if st.session_state.get("aim_users_exist"):
        return False
    exists = any_user_exists(get_runtime().db)
    st.session_state["aim_users_exist"] = exists
    return not exists


def create_first_admin(email: str, password: str, password_again: str, organization_name: str) -> dict[str, Any]:
    """Create the organization and its first admin, then sign them in. Returns the user.

    Raises ValidationError naming the field (passwords that differ name `password_again`), and
    Conflict when someone else finished the first run meanwhile.
    """
    runtime = get_runtime()
    organization_name = organizations.validate_org_name(organization_name)
    users.validate_email(email)
    users.validate_password(password)
    if password != password_again:
        raise ValidationError("password_again", "does not match the password; type the same password twice")
    # NOTE: two browsers that finish the first run at the same moment can both create an admin.
    # The second one is then an ordinary admin of the organization it named.
    if any_user_exists(runtime.db):
        raise Conflict("an admin was created meanwhile; reload the page and sign in")
    organization = organizations.get_or_create(runtime.db, organization_name)
    users.create_user(runtime.db, organization["id"], system("dashboard-first-run"), email=email, password=password,
                      role="admin")
    logger.info("first admin created for organization %s", organization["id"])
    st.session_state["aim_users_exist"] = True
    return sign_in_with_password(email, password)


def sign_out() -> None:
    """End the session on the server, clear the cookie and this tab's state.

    An OIDC user is also signed out of Streamlit's identity cookie with `st.logout()`, which
    reloads the page.
    """
    user = st.session_state.get(USER_KEY)
    session = st.session_state.get(SESSION_KEY)
    if user is not None and session is not None:
        runtime = get_runtime()
        actor = Actor("user", str(user["id"]), role=user["role"])
        try:
            sessions.logout(runtime.db, runtime.secret_key, session["id"], user["organization_id"], actor)
        except AIMError as exc:
            # The cookie is cleared below either way; a session left open expires by itself.
            logger.error("sign-out of session %s failed: %s", session["id"], exc)
    cookie = st.context.cookies.get(COOKIE_NAME) if st.context.cookies else None
    if cookie:
        st.session_state[REJECTED_COOKIE_KEY] = cookie
    _clear_state("You are signed out.")
    st.session_state[COOKIE_SCRIPT_KEY] = _cookie_script(None)
    if oidc_configured() and st.user.is_logged_in:
        st.logout()


def actor_for(user: dict[str, Any]) -> Actor:
    """Return the audit actor for a signed-in dashboard user."""
    ip_address, user_agent = _client_details()
    return Actor("user", str(user["id"]), role=user["role"], ip_address=ip_address, user_agent=user_agent)
