"""Admin page: role gating, users and roles, API keys shown once."""

from __future__ import annotations

import uuid

import pytest
from streamlit.testing.v1 import AppTest

from aim.services import api_keys, users
from aim.services.actor import system
from aim.ui import auth

from ui_support import APP, PASSWORD, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration


def admin_page(user: dict) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.run()
    return at.switch_page("pages/admin.py").run()


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button labelled {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


@pytest.mark.parametrize("role", ["analyst", "manager", "viewer"])
def test_only_admin_opens_admin(db, org_id, role):
    at = admin_page(make_user(db, org_id, role))
    assert f"Your role {role} cannot open Admin" in texts(at.error)
    assert len(at.tabs) == 0


def fill_create_user(at: AppTest, email: str, role: str, password: str, again: str) -> AppTest:
    at.text_input(key="create_user_email").input(email)
    at.text_input(key="create_user_name").input("New Person")
    at.selectbox(key="create_user_role").set_value(role)
    at.text_input(key="create_user_password").input(password)
    at.text_input(key="create_user_password_again").input(again)
    return button(at, "Create user").click().run()


def test_admin_creates_user(db, org_id):
    admin = make_user(db, org_id, "admin")
    at = admin_page(admin)
    assert [tab.label for tab in at.tabs] == ["Users", "API keys", "Organization"]
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"

    fill_create_user(at, email, "analyst", PASSWORD, PASSWORD)

    assert not at.exception
    assert f"User {email} created with role analyst" in texts(at.success)
    created = users.authenticate(db, email, PASSWORD)
    assert created["role"] == "analyst"
    assert created["organization_id"] == org_id
    assert email in list(at.dataframe[0].value["email"])


def test_create_user_names_invalid_fields(db, org_id):
    at = admin_page(make_user(db, org_id, "admin"))
    fill_create_user(at, "not-an-email", "viewer", PASSWORD, PASSWORD)
    assert "Invalid email" in texts(at.error)
    fill_create_user(at, "ok@example.com", "viewer", PASSWORD, PASSWORD + "!")
    assert "Invalid password_again" in texts(at.error)


def test_admin_changes_role_and_deactivates(db, org_id):
    admin = make_user(db, org_id, "admin")
    other = make_user(db, org_id, "viewer")
    at = admin_page(admin)
    at.selectbox(key="admin_user_select").set_value(other["email"]).run()
    at.selectbox(key="admin_user_role").set_value("manager").run()
    at.button(key="admin_change_role").click().run()
    assert users.get_user(db, other["id"])["role"] == "manager"

    at.selectbox(key="admin_user_select").set_value(other["email"]).run()
    at.button(key="admin_toggle_active").click().run()
    assert users.get_user(db, other["id"])["is_active"] is False


def test_admin_cannot_demote_self(db, org_id):
    admin = make_user(db, org_id, "admin")
    at = admin_page(admin)
    at.selectbox(key="admin_user_select").set_value(admin["email"]).run()
    assert at.button(key="admin_change_role").disabled
    assert at.button(key="admin_toggle_active").disabled


def test_api_key_secret_shown_once(db, org_id):
    at = admin_page(make_user(db, org_id, "admin"))
    at.text_input(key="api_key_name").input("ci-pipeline")
    button(at, "Create API key").click().run()

    secrets = [code.value for code in at.code if code.value.startswith(api_keys.KEY_PREFIX)]
    assert len(secrets) == 1
    row = api_keys.authenticate_api_key(db, secrets[0])
    assert row["name"] == "ci-pipeline"

    at.run()
    assert not [code.value for code in at.code if code.value.startswith(api_keys.KEY_PREFIX)]


def test_admin_revokes_api_key(db, org_id):
    admin = make_user(db, org_id, "admin")
    created = api_keys.create_api_key(db, org_id, system("test"), name="old-key", role="viewer")
    at = admin_page(admin)
    assert at.button(key="revoke_api_key").disabled
    at.checkbox(key="revoke_api_key_confirm").check().run()
    at.button(key="revoke_api_key").click().run()
    assert api_keys.get_api_key(db, org_id, created.api_key["id"])["revoked_at"] is not None


def test_admin_imports_registry_file(db, org_id):
    import json

    entries = [
        {"id": f"test-{uuid.uuid4().hex[:8]}", "name": f"io.example/server-{index}",
         "repository": {"url": f"https://github.com/example/server-{index}", "source": "github"},
         "description": "example server"}
        for index in range(3)
    ]
    entries.append({"bogus": True})
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, make_user(db, org_id, "admin"))
    at.run()
    at.switch_page("pages/mcp_servers.py").run()
    at.file_uploader(key="registry_file").set_value(("registry.json", json.dumps(entries).encode(), "application/json"))
    at.run()
    at.button(key="registry_import").click().run()

    assert not at.exception
    assert "registry.json: 3 created, 0 updated, 0 unchanged, 1 skipped." in texts(at.success)
    count = db.fetch_value("t", "SELECT count(*) FROM mcp_servers WHERE organization_id = %s AND source = 'registry'",
                           (org_id,))
    assert count == 3


def test_analyst_has_no_registry_import(db, org_id):
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, make_user(db, org_id, "analyst"))
    at.run()
    at.switch_page("pages/mcp_servers.py").run()
    assert "Import from an MCP Registry file" not in [expander.label for expander in at.expander]
