"""Dashboard shell: sign-in, first-run admin creation, session cookie, role-gated navigation."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from aim.db import migrate
from aim.db.pool import Database
from aim.runtime import Runtime, make_redis, set_runtime
from aim.services import organizations, sessions, users
from aim.services.actor import ROLES, system
from aim.services.users import AuthenticationFailed
from aim.ui import auth
from aim.ui.access import PAGE_TITLES, allowed_pages, can_open, can_write

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent
APP = str(REPO_ROOT / "app.py")
PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def navigation_mode(request, monkeypatch):
    """Run AppTest as a server process does after app.py has run once: in st.navigation mode.

    AppTest resets Streamlit's "pages directory" flag before every run, so without this each
    interaction would first run the page script alone and lose its button click in the rerun that
    `require_page` triggers. Tests that request the `pages_directory_mode` fixture keep Streamlit's
    behaviour.
    """
    if "pages_directory_mode" in request.fixturenames:
        return
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def pages_directory_mode():
    """Request this fixture to run AppTest in Streamlit's own "pages directory" mode."""


def existing_pages(role: str) -> list[str]:
    """Allowed pages whose files exist (another helper may still be adding some)."""
    return [key for key in allowed_pages(role) if (REPO_ROOT / "pages" / f"{key}.py").is_file()]


def make_user(db, org_id, role: str, password: str = PASSWORD) -> dict:
    row = users.create_user(db, org_id, system("test"), email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
                            password=password, role=role)
    organization = organizations.get(db, org_id)
    return {**row, "organization_name": organization["name"]}


def app_as(user: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    if user is not None:
        auth.sign_in_session(at.session_state, user)
    return at


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button labelled {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


# --- pure parts -------------------------------------------------------------------------------------


def test_access_table_per_role():
    assert allowed_pages("admin") == list(PAGE_TITLES)
    assert allowed_pages("analyst") == ["overview", "agents", "mcp_servers", "audit_logs", "alerts", "trust"]
    assert allowed_pages("manager") == ["overview", "agents", "mcp_servers", "alerts", "trust"]
    assert allowed_pages("viewer") == ["overview", "agents", "mcp_servers", "audit_logs", "alerts", "performance"]
    assert allowed_pages("intruder") == []
    for role in ROLES:
        assert can_open(role, "admin") == (role == "admin")
    assert [role for role in ROLES if can_write(role)] == ["admin", "analyst"]


def test_session_cookie_round_trip():
    secret = b"instance-secret"
    session_id = uuid.uuid4()
    expires = int(time.time()) + 3600
    value = auth.sign_session_cookie(secret, session_id, expires)
    assert auth.read_session_cookie(secret, value) == (session_id, expires)


def test_session_cookie_rejects_forgery_and_expiry():
    secret = b"instance-secret"
    session_id = uuid.uuid4()
    expires = int(time.time()) + 3600
    value = auth.sign_session_cookie(secret, session_id, expires)
    other_session = value.replace(str(session_id), str(uuid.uuid4()))
    assert auth.read_session_cookie(secret, other_session) is None
    assert auth.read_session_cookie(b"another-secret", value) is None
    longer = auth.sign_session_cookie(secret, session_id, expires).rsplit(".", 1)[0].replace(str(expires), str(expires + 10**6))
    assert auth.read_session_cookie(secret, f"{longer}.{value.rsplit('.', 1)[1]}") is None
    expired = auth.sign_session_cookie(secret, session_id, int(time.time()) - 1)
    assert auth.read_session_cookie(secret, expired) is None
    assert auth.read_session_cookie(secret, "garbage") is None
    assert auth.read_session_cookie(secret, None) is None


# --- first run ------------------------------------------------------------------------------------


@pytest.fixture
def empty_runtime(runtime: Runtime, settings, empty_database_url: str):
    """A runtime on a migrated database with no users at all; the session runtime is restored after."""
    migrate.upgrade(empty_database_url)
    scoped = dataclasses.replace(settings, database_url=empty_database_url,
                                 redis_prefix=f"{settings.redis_prefix}firstrun{uuid.uuid4().hex[:6]}:")
    database = Database(scoped, empty_database_url)
    database.open()
    secret = database.fetch_value("instance.secret_key", "SELECT value FROM instance_settings WHERE key = 'secret_key'")
    fresh = Runtime(scoped, database, make_redis(scoped.redis_url, scoped), scoped.redis_url, secret.encode())
    set_runtime(fresh)
    yield fresh
    set_runtime(runtime)
    fresh.close()


def fill_first_run(at: AppTest, email: str, password: str, again: str, organization: str) -> None:
    at.text_input(key="first_run_organization").input(organization)
    at.text_input(key="first_run_email").input(email)
    at.text_input(key="first_run_password").input(password)
    at.text_input(key="first_run_password_again").input(again)
    button(at, "Create admin and sign in").click().run()


def test_first_run_creates_admin_and_signs_in(empty_runtime):
    at = app_as().run()
    assert not at.exception
    assert "Create the first admin" in texts(at.markdown)

    fill_first_run(at, "first@example.com", PASSWORD, PASSWORD, "Acme")

    assert not at.exception
    signed_in = at.session_state[auth.USER_KEY]
    assert signed_in["email"] == "first@example.com"
    assert signed_in["role"] == "admin"
    assert signed_in["organization_name"] == "Acme"
    assert at.session_state["aim_nav_pages"] == existing_pages("admin")
    row = users.authenticate(empty_runtime.db, "first@example.com", PASSWORD)
    assert row["role"] == "admin"


def test_first_run_names_mismatched_password(empty_runtime):
    at = app_as().run()
    fill_first_run(at, "first@example.com", PASSWORD, PASSWORD + "x", "Acme")
    assert "Invalid password_again" in texts(at.error)
    assert auth.USER_KEY not in at.session_state
    assert empty_runtime.db.fetch_value("t", "SELECT count(*) FROM users") == 0


def test_first_run_names_short_password(empty_runtime):
    at = app_as().run()
    fill_first_run(at, "first@example.com", "short", "short", "Acme")
    assert "Invalid password" in texts(at.error)


# --- sign-in and sessions ---------------------------------------------------------------------------


def sign_in(at: AppTest, email: str, password: str) -> AppTest:
    at.text_input(key="sign_in_email").input(email)
    at.text_input(key="sign_in_password").input(password)
    return button(at, "Sign in").click().run()


def test_sign_in_with_password_starts_server_session(db, org_id, runtime):
    person = make_user(db, org_id, "analyst")
    at = app_as().run()
    assert "Sign in" in texts(at.markdown)

    sign_in(at, person["email"], PASSWORD)

    assert not at.exception
    assert at.session_state[auth.USER_KEY]["id"] == person["id"]
    session = at.session_state[auth.SESSION_KEY]
    info = sessions.load_session(db, session["id"])
    assert info.user_id == person["id"]
    assert session["expires_at"] - time.time() <= auth.DASHBOARD_SESSION_LIFETIME.total_seconds()
    assert at.session_state["aim_nav_pages"] == existing_pages("analyst")


def test_sign_in_autocomplete_hints(db, org_id):
    make_user(db, org_id, "viewer")
    at = app_as().run()
    assert at.text_input(key="sign_in_email").proto.autocomplete == "username"
    assert at.text_input(key="sign_in_password").proto.autocomplete == "current-password"


def test_sign_in_rejects_wrong_password(db, org_id):
    person = make_user(db, org_id, "viewer")
    at = app_as().run()
    sign_in(at, person["email"], "wrong password entirely")
    assert "Sign-in failed" in texts(at.error)
    assert auth.USER_KEY not in at.session_state


def test_sign_out_revokes_server_session(db, org_id):
    person = make_user(db, org_id, "manager")
    at = sign_in(app_as().run(), person["email"], PASSWORD)
    session_id = at.session_state[auth.SESSION_KEY]["id"]

    at.button(key="sign_out").click().run()

    assert auth.USER_KEY not in at.session_state
    assert "Sign in" in texts(at.markdown)
    with pytest.raises(AuthenticationFailed) as failure:
        sessions.load_session(db, session_id)
    assert failure.value.reason == "session_revoked"


def test_revoked_session_returns_to_sign_in(db, org_id, runtime):
    person = make_user(db, org_id, "viewer")
    at = sign_in(app_as().run(), person["email"], PASSWORD)
    session_id = at.session_state[auth.SESSION_KEY]["id"]
    sessions.logout(db, runtime.secret_key, session_id, org_id, system("test"))

    at.run()

    assert auth.USER_KEY not in at.session_state
    assert "signed out" in texts(at.info)


def test_role_change_applies_to_open_session(db, org_id):
    person = make_user(db, org_id, "viewer")
    at = sign_in(app_as().run(), person["email"], PASSWORD)
    users.set_role(db, org_id, person["id"], system("test"), "analyst")

    at.run()

    assert at.session_state[auth.USER_KEY]["role"] == "analyst"
    assert at.session_state["aim_nav_pages"] == existing_pages("analyst")


# --- role gating ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_navigation_lists_only_allowed_pages(db, org_id, role):
    at = app_as(make_user(db, org_id, role)).run()
    assert not at.exception
    assert at.session_state["aim_nav_pages"] == existing_pages(role)


def test_viewer_cannot_open_admin(db, org_id):
    at = app_as(make_user(db, org_id, "viewer")).run()
    at.switch_page("pages/admin.py").run()
    assert "Your role viewer cannot open Admin" in texts(at.error)
    assert "Users" not in [tab.label for tab in at.tabs]


def test_denied_page_keeps_sidebar(db, org_id):
    at = app_as(make_user(db, org_id, "viewer")).run()
    at.switch_page("pages/admin.py").run()

    assert "Your role viewer cannot open Admin" in texts(at.error)
    assert at.sidebar.button(key="sign_out").label == "Sign out"
    assert at.sidebar.selectbox(key="timezone").value == "UTC"


def test_manager_cannot_open_audit_logs(db, org_id):
    if not (REPO_ROOT / "pages" / "audit_logs.py").is_file():
        pytest.skip("pages/audit_logs.py is not there yet")
    at = app_as(make_user(db, org_id, "manager")).run()
    at.switch_page("pages/audit_logs.py").run()
    assert "Your role manager cannot open Audit logs" in texts(at.error)


def test_timezone_from_url_is_kept(db, org_id):
    at = app_as(make_user(db, org_id, "viewer"))
    at.query_params["tz"] = "Europe/Berlin"
    at.run()
    assert at.session_state["timezone"] == "Europe/Berlin"
    assert at.query_params["tz"] == "Europe/Berlin"


def test_unknown_timezone_falls_back_to_utc(db, org_id):
    at = app_as(make_user(db, org_id, "viewer"))
    at.query_params["tz"] = "Mars/Olympus"
    at.run()
    assert at.session_state["timezone"] == "UTC"


def test_deep_link_runs_through_app_shell(db, org_id, pages_directory_mode):
    at = app_as(make_user(db, org_id, "viewer")).run()
    del at.session_state["aim_nav_pages"]
    at.switch_page("pages/agents.py").run()
    assert not at.exception
    assert at.session_state["aim_nav_pages"] == existing_pages("viewer")
    assert at.button(key="sign_out") is not None


# --- OIDC -----------------------------------------------------------------------------------------

OIDC_SECRETS = {
    "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
    "cookie_secret": "test-cookie-secret",
    "client_id": "aim-dashboard",
    "client_secret": "test-client-secret",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


def test_oidc_button_only_with_auth_secrets(db, org_id):
    make_user(db, org_id, "viewer")
    at = app_as().run()
    assert "Sign in with single sign-on" not in [b.label for b in at.button]
    at = app_as()
    at.secrets["auth"] = OIDC_SECRETS
    at.user = {"is_logged_in": False}
    at.run()
    assert "Sign in with single sign-on" in [b.label for b in at.button]


def test_oidc_identity_maps_to_local_user(db, org_id):
    person = make_user(db, org_id, "analyst")
    at = app_as()
    at.secrets["auth"] = OIDC_SECRETS
    at.user = {"is_logged_in": True, "email": person["email"].upper()}
    at.run()
    assert not at.exception
    assert at.session_state[auth.USER_KEY]["id"] == person["id"]
    assert at.session_state[auth.USER_KEY]["role"] == "analyst"


def test_oidc_unknown_email_is_not_created(db, org_id):
    at = app_as()
    at.secrets["auth"] = OIDC_SECRETS
    email = f"stranger-{uuid.uuid4().hex[:8]}@example.com"
    at.user = {"is_logged_in": True, "email": email}
    at.run()
    assert auth.USER_KEY not in at.session_state
    assert f"No active AIM user has the email {email}" in texts(at.info)
    assert db.fetch_value("t", "SELECT count(*) FROM users WHERE lower(email) = lower(%s)", (email,)) == 0


# --- error display ------------------------------------------------------------------------------


def _guarded_failure():
    import psycopg
    import streamlit as st

    from aim.errors import NotFound, ValidationError
    from aim.ui.errors import page_guard

    kind = st.session_state.get("failure")
    with page_guard("test"):
        if kind == "database":
            raise psycopg.OperationalError("connection refused")
        if kind == "validation":
            raise ValidationError("name", "has 0 characters; expected 1 to 200")
        if kind == "not_found":
            raise NotFound("agent", "42")
        st.write("fine")
    st.write("after the guard")


@pytest.mark.parametrize("kind, expected", [
    ("database", "PostgreSQL is unreachable"),
    ("validation", "Invalid name: has 0 characters; expected 1 to 200"),
    ("not_found", "agent 42 not found"),
])
def test_page_guard_shows_message_not_traceback(kind, expected):
    at = AppTest.from_function(_guarded_failure)
    at.session_state["failure"] = kind
    at.run()
    assert not at.exception
    assert expected in texts(at.error)
    assert "after the guard" in texts(at.markdown)


# --- page smoke tests ---------------------------------------------------------------------------


def test_overview_shows_no_traffic_without_verifications(db, org_id):
    from aim.services import agents

    agents.register_agent(db, org_id, system("test"), name="lonely-agent")
    at = app_as(make_user(db, org_id, "manager")).run()
    at.switch_page("pages/overview.py").run()
    assert not at.exception
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Agents"] == "1"
    assert metrics["Verifications / min"] == "no traffic"
    assert metrics["Denial rate"] == "no traffic"
    assert metrics["Open alerts"] == "0"


def test_mcp_servers_list_and_detail(db, org_id):
    from aim.services import mcp_servers

    server = mcp_servers.register_server(db, org_id, system("test"), name="files-server",
                                         url="https://mcp.example.com/files")
    at = app_as(make_user(db, org_id, "viewer")).run()
    at.switch_page("pages/mcp_servers.py").run()
    assert not at.exception
    assert list(at.dataframe[0].value["name"]) == ["files-server"]
    assert "Import from an MCP Registry file" not in [expander.label for expander in at.expander]

    at.query_params["server"] = str(server["id"])
    at.run()
    assert "## files-server" in texts(at.markdown)
    assert [tab.label for tab in at.tabs] == ["Capabilities and drift", "Attestations", "Connected agents",
                                              "Confidence history"]


# --- start-up warm-up and per-run session lookup -------------------------------------------------


def session_lookups() -> int:
    from aim.cache import get_cache
    from aim.services.users import SESSIONS_CACHE

    counters = get_cache().stats()[SESSIONS_CACHE]
    return counters["l1_hit"] + counters["l2_hit"] + counters["miss"]


def test_page_run_looks_session_up_once(db, org_id, runtime):
    person = make_user(db, org_id, "viewer")
    at = sign_in(app_as().run(), person["email"], PASSWORD)
    at.switch_page("pages/overview.py").run()
    assert not at.exception

    before = session_lookups()
    at.run()

    assert not at.exception
    assert session_lookups() - before == 1
    assert auth.RUN_USER_KEY not in at.session_state


def test_app_is_served_as_st_app():
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(Path(APP))

    assert found.is_asgi_app
    assert found.app_name == "app"


def test_page_imports_lists_page_dependencies():
    from aim.ui import warmup

    modules = warmup.page_imports()

    assert "pandas" in modules
    assert "aim.ui.components" in modules
    assert "aim.services.dashboard_queries_shell" in modules
    assert "aim.ui.auth.require_page" in modules
    assert warmup.import_modules(["json", "aim.ui.auth.require_page", "no_such_module_here"]) == 1


def test_lifespan_warms_process(runtime):
    import asyncio

    from streamlit.runtime.pages_manager import PagesManager

    from aim.ui import warmup

    PagesManager.uses_pages_directory = True

    async def serve_briefly() -> None:
        async with warmup.lifespan(None):
            assert PagesManager.uses_pages_directory is False
            # Serving starts only once the warm-up has finished (or WARMUP_WAIT_S has passed).
            assert warmup.wait(0)

    asyncio.run(serve_briefly())

    assert warmup.start() is None, "a second start must not run the warm-up again"


def test_warm_up_freezes_long_lived_objects(runtime):
    import gc

    from aim.ui import warmup

    gc.unfreeze()
    try:
        warmup.freeze_long_lived_objects()
        frozen = gc.get_freeze_count()
    finally:
        # The test process goes on creating and dropping objects, so it collects them as usual.
        gc.unfreeze()

    # This process has imported pandas, Plotly, PyArrow and Streamlit, which leave over 100,000 objects.
    assert frozen > 10_000
