"""Browser test that opens every dashboard page as an admin and checks that none shows an exception."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from aim.ui.access import PAGE_TITLES

pytestmark = pytest.mark.e2e

LOCAL_URL_PREFIXES = ("http://127.0.0.1", "ws://127.0.0.1", "http://localhost", "ws://localhost", "data:", "blob:")


def test_every_page_renders(admin_tab, seeded_org):
    page = admin_tab.page
    log_start = admin_tab.dashboard.log_size()
    # The dashboard must work offline and send nothing outside the machine (fonts, icons, CDNs).
    outside = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith(LOCAL_URL_PREFIXES) else None)
    admin_tab.open("/overview", "overview")
    expect(page.get_by_test_id("stMetric").first).to_be_visible()

    range_mismatches = []
    for key in PAGE_TITLES:
        if key != "overview":
            admin_tab.open_page(key)
        admin_tab.assert_no_exception()
        admin_tab.screenshot(f"page-{key}")
        picker = page.get_by_role("combobox", name="Time range", exact=True)
        if picker.count():
            # The window the panels show is described as "<range label> · <start> to <end>".
            chosen = picker.input_value()
            if f"{chosen} ·" not in page.get_by_test_id("stMain").inner_text():
                range_mismatches.append(f"{key}: the picker shows {chosen!r} but the panels show another window")

    # The detail views of an agent and of an MCP server, opened by choosing the first row.
    admin_tab.open_page("agents")
    admin_tab.select_grid_row(0)
    page.wait_for_url(re.compile(r"[?&]agent="))
    expect(page.get_by_role("tab", name="Trust history")).to_be_visible()
    admin_tab.wait_until_idle()
    admin_tab.assert_no_exception()
    admin_tab.screenshot("page-agent-detail")

    admin_tab.open_page("mcp_servers")
    admin_tab.select_grid_row(0)
    page.wait_for_url(re.compile(r"[?&]server="))
    expect(page.get_by_role("tab", name="Attestations")).to_be_visible()
    admin_tab.wait_until_idle()
    admin_tab.assert_no_exception()
    admin_tab.screenshot("page-mcp-server-detail")

    assert not range_mismatches, range_mismatches
    assert not outside, f"requests left the machine: {outside[:5]}"
    server_log = admin_tab.dashboard.log_since(log_start)
    assert "Traceback" not in server_log, server_log[server_log.index("Traceback"):][:3000]
