"""Agents page: filters and paging state in the URL, detail view, register and lifecycle actions."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from streamlit.testing.v1 import AppTest

from aim.services import agents
from aim.services.actor import system
from aim.trust import FACTOR_NAMES
from aim.ui import auth

from ui_support import APP, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration

PAGE_SIZE = 50


def register(db, org_id, name: str, **options) -> dict:
    return agents.register_agent(db, org_id, system("test"), name=name, **options).agent


def agents_page(user: dict, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.run()
    at.switch_page("pages/agents.py")
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def table_names(at: AppTest) -> list[str]:
    assert len(at.dataframe) >= 1, "no table rendered"
    return list(at.dataframe[0].value["name"])


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button labelled {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


@pytest.fixture
def fleet(db, org_id):
    """Agents of two types and three statuses, with distinct trust scores."""
    made = {}
    for index in range(4):
        made[f"alpha-{index}"] = register(db, org_id, f"alpha-{index}", agent_type="assistant")
    for index in range(3):
        made[f"beta-{index}"] = register(db, org_id, f"beta-{index}", agent_type="etl")
    agents.suspend(db, org_id, made["beta-0"]["id"], system("test"))
    agents.revoke(db, org_id, made["beta-1"]["id"], system("test"))
    # Trust scores are set directly: recalculation is not what this page test is about.
    for name, score in (("alpha-0", 0.2), ("alpha-1", 0.35), ("beta-2", 0.9)):
        db.execute("test.trust", "UPDATE agents SET trust_score = %s WHERE id = %s", (score, made[name]["id"]))
    return made


def test_status_filter_from_url(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"), status="suspended")
    assert not at.exception
    assert table_names(at) == ["beta-0"]
    assert at.selectbox(key="qp_status").value == "suspended"


def test_type_and_prefix_filters_from_url(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"), type="assistant", q="alpha-1")
    assert table_names(at) == ["alpha-1"]


def test_trust_range_filter_from_url(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"), trust="0-40")
    assert table_names(at) == ["alpha-1", "alpha-0"]
    assert at.slider(key="qp_trust").value == (0, 40)


def test_filter_change_writes_url_and_drops_cursor(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"))
    at.query_params["cursor"] = "stale"
    at.query_params["page"] = "3"
    at.selectbox(key="qp_status").set_value("revoked").run()
    assert at.query_params["status"] == "revoked"
    assert "cursor" not in at.query_params
    assert "page" not in at.query_params
    assert table_names(at) == ["beta-1"]


def test_invalid_cursor_restarts_at_first_page(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"), cursor="not-a-cursor")
    assert "no longer valid" in texts(at.warning)
    assert len(table_names(at)) == 7
    assert "cursor" not in at.query_params


def test_paging_keeps_cursor_in_url(db, org_id):
    for index in range(PAGE_SIZE + 5):
        register(db, org_id, f"bulk-{index:03d}")
    at = agents_page(make_user(db, org_id, "viewer"), sort="name")
    first_page = table_names(at)
    assert first_page[0] == "bulk-000"
    assert len(first_page) == PAGE_SIZE

    at.button(key="agents_pager_next").click().run()

    assert at.query_params["page"] == "2"
    assert at.query_params["sort"] == "name"
    cursor = at.query_params["cursor"]
    assert table_names(at) == [f"bulk-{index:03d}" for index in range(PAGE_SIZE, PAGE_SIZE + 5)]
    at.run()
    assert at.query_params["cursor"] == cursor
    assert table_names(at)[0] == f"bulk-{PAGE_SIZE:03d}"

    at.button(key="agents_pager_prev").click().run()
    assert table_names(at) == first_page
    assert at.query_params["page"] == "1"

    at.button(key="agents_pager_first").click().run()
    assert table_names(at) == first_page
    assert "cursor" not in at.query_params


def test_viewer_sees_no_write_controls(db, org_id, fleet):
    at = agents_page(make_user(db, org_id, "viewer"), agent=str(fleet["alpha-2"]["id"]))
    assert "Actions" not in [tab.label for tab in at.tabs]
    at = agents_page(make_user(db, org_id, "manager"))
    assert "Register agent" not in [expander.label for expander in at.expander]


def test_detail_view_shows_factors_and_identity(db, org_id, fleet):
    agent = fleet["alpha-2"]
    at = agents_page(make_user(db, org_id, "analyst"), agent=str(agent["id"]))
    assert not at.exception
    assert "## alpha-2" in texts(at.markdown)
    factors = next(frame.value for frame in at.dataframe if "provenance" in frame.value.columns)
    stored = agents.get_agent(db, org_id, agent["id"])["trust_factors"]
    expected = [(stored.get(name) or {}).get("provenance", "no data") for name in FACTOR_NAMES]
    assert list(factors["provenance"]) == expected
    assert "no data" in expected
    assert list(factors["factor"]) == [name.replace("_", " ") for name in FACTOR_NAMES]
    assert agent["key_id"] in texts(at.markdown)
    assert [tab.label for tab in at.tabs][-1] == "Actions"


def test_unknown_agent_shows_not_found(db, org_id):
    at = agents_page(make_user(db, org_id, "viewer"), agent=str(uuid.uuid4()))
    assert "not found" in texts(at.error)
    at = agents_page(make_user(db, org_id, "viewer"), agent="not-a-uuid")
    assert "Invalid agent" in texts(at.error)


def fill_register(at: AppTest, name: str, capabilities: str = "") -> AppTest:
    at.text_input(key="register_name").input(name)
    at.text_input(key="register_capabilities").input(capabilities)
    return button(at, "Register agent").click().run()


def test_register_shows_private_key_once(db, org_id):
    at = agents_page(make_user(db, org_id, "analyst"))
    fill_register(at, "fresh-agent", "db:read, files:*")

    assert not at.exception
    assert len(at.get("download_button")) == 1
    pem = at.code[0].value
    assert "BEGIN PRIVATE KEY" in pem
    agent_id = uuid.UUID(at.query_params["agent"])
    agent = agents.get_agent(db, org_id, agent_id)
    assert agent["name"] == "fresh-agent"
    assert agent["key_origin"] == "generated"
    assert agent["capabilities"] == ["db:read", "files:*"]
    private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    public_raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert bytes(agent["public_key"]) == public_raw

    at.run()

    assert len(at.get("download_button")) == 0
    assert "BEGIN PRIVATE KEY" not in texts(at.code)


def test_register_names_invalid_field(db, org_id):
    at = agents_page(make_user(db, org_id, "admin"))
    at.text_input(key="register_type").input("Not A Type")
    fill_register(at, "typed-agent")
    assert "Invalid agent_type" in texts(at.error)
    assert len(at.get("download_button")) == 0


def test_suspend_and_reactivate_from_detail(db, org_id, fleet):
    agent = fleet["alpha-3"]
    at = agents_page(make_user(db, org_id, "analyst"), agent=str(agent["id"]))
    at.text_input(key="action_reason").input("investigating")
    at.button(key="suspend_agent").click().run()
    assert agents.get_agent(db, org_id, agent["id"])["status"] == "suspended"
    assert "suspended" in texts(at.success)

    at.button(key="reactivate_agent").click().run()
    assert agents.get_agent(db, org_id, agent["id"])["status"] == "verified"


def test_revoke_needs_confirmation(db, org_id, fleet):
    agent = fleet["alpha-3"]
    at = agents_page(make_user(db, org_id, "admin"), agent=str(agent["id"]))
    assert at.button(key="revoke_agent").disabled
    at.checkbox(key="revoke_confirm").check().run()
    at.button(key="revoke_agent").click().run()
    assert agents.get_agent(db, org_id, agent["id"])["status"] == "revoked"


def test_rotate_key_shows_new_private_key_once(db, org_id, fleet):
    agent = fleet["alpha-2"]
    at = agents_page(make_user(db, org_id, "analyst"), agent=str(agent["id"]))
    button(at, "Rotate key").click().run()
    rotated = agents.get_agent(db, org_id, agent["id"])
    assert rotated["key_id"] != agent["key_id"]
    assert rotated["previous_key_id"] == agent["key_id"]
    assert len(at.get("download_button")) == 1
    at.run()
    assert len(at.get("download_button")) == 0


def test_grant_and_approve_capabilities(db, org_id, fleet):
    agent = fleet["alpha-2"]
    request = agents.request_capability(db, org_id, agent["id"], "reports:read", system("test"))
    at = agents_page(make_user(db, org_id, "analyst"), agent=str(agent["id"]))
    at.text_input(key="grant_capability_value").input("db:write")
    button(at, "Grant").click().run()
    assert "db:write" in agents.get_agent(db, org_id, agent["id"])["capabilities"]

    at.button(key=f"approve_request_{request['id']}").click().run()
    assert "reports:read" in agents.get_agent(db, org_id, agent["id"])["capabilities"]
