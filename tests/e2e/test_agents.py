"""Browser test of registering an agent and downloading the private key that AIM generated for it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import expect

from aim.identity import load_private_key
from aim.services import agents

pytestmark = pytest.mark.e2e


def test_register_agent_downloads_key(admin_tab, seeded_org, db):
    page = admin_tab.page
    admin_tab.open("/agents", "agents")
    expect(admin_tab.heading("agents")).to_be_visible()

    name = f"e2e-agent-{uuid.uuid4().hex[:8]}"
    page.get_by_test_id("stExpander").filter(has_text="Register agent").locator("summary").click()
    page.locator(".st-key-register_name input").fill(name)
    page.locator(".st-key-register_capabilities input").fill("db:read, files:write")
    page.get_by_test_id("stForm").get_by_role("button", name="Register agent").click()
    page.wait_for_url(re.compile(r"[?&]agent=[0-9a-f-]{36}"))
    agent_id = uuid.UUID(parse_qs(urlsplit(page.url).query)["agent"][0])
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    admin_tab.wait_until_idle()
    admin_tab.screenshot("agent-registered")

    with page.expect_download() as download_info:
        page.locator(".st-key-download_private_key button").click()
    download = download_info.value
    private_key = load_private_key(Path(download.path()).read_text())
    public_key = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    agent = agents.get_agent(db, seeded_org.id, agent_id)

    assert download.suggested_filename == f"{name}-private-key.pem"
    assert agent["name"] == name
    assert agent["key_origin"] == "generated"
    assert public_key == bytes(agent["public_key"])

    # The key is offered once: after a reload the detail view no longer has it.
    page.reload()
    expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    admin_tab.wait_until_idle()
    expect(page.locator(".st-key-download_private_key")).to_have_count(0)
    admin_tab.assert_no_exception()
