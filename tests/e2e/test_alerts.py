"""Browser test that acknowledging an alert acts on the selected alert id while new alerts arrive."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from aim.services import alerts

pytestmark = pytest.mark.e2e

NEW_ALERTS = 3
SELECTED_ROW = 2


def alert_statuses(db, organization_id) -> dict[uuid.UUID, str]:
    rows = db.fetch_all("e2e.alert_statuses", "SELECT id, status FROM alerts WHERE organization_id = %s",
                        (organization_id,))
    return {row["id"]: row["status"] for row in rows}


def test_acknowledge_selected_alert(admin_tab, seeded_org, db):
    page = admin_tab.page
    before = alert_statuses(db, seeded_org.id)
    # Refresh every 5 s, so the new alerts appear in the table before the click.
    admin_tab.open("/alerts?refresh=5s", "alerts")
    expect(admin_tab.pager_caption(1)).to_be_visible()

    admin_tab.select_grid_row(SELECTED_ROW)
    page.wait_for_url(re.compile(r"[?&]alert=[0-9a-f-]{36}"))
    selected = uuid.UUID(parse_qs(urlsplit(page.url).query)["alert"][0])
    admin_tab.wait_until_idle()
    selected_row = alerts.get_alert(db, seeded_org.id, selected)
    expect(page.get_by_text(f"Alert id: {selected}")).to_be_visible()
    assert before[selected] == "open"
    admin_tab.screenshot("alerts-selected")

    # New open alerts sort above the selected one and shift its row down the table.
    titles = [f"E2E alert {number} {uuid.uuid4().hex[:6]}" for number in range(NEW_ALERTS)]
    with db.transaction() as conn:
        raised = [
            alerts.raise_alert(db, conn, seeded_org.id, alert_type="e2e_test", severity="critical", title=title,
                               resource_type="agent", resource_id=str(uuid.uuid4()))
            for title in titles
        ]
    grid = page.get_by_test_id("stDataFrame")
    for title in titles:
        expect(grid.locator("td", has_text=title)).to_have_count(1)
    admin_tab.wait_until_idle()
    expect(grid.locator('tr[aria-selected="true"]')).to_contain_text(selected_row["title"])
    expect(page.get_by_text(f"Alert id: {selected}")).to_be_visible()
    admin_tab.screenshot("alerts-new-arrived")

    page.locator(".st-key-alert_acknowledge button").click()
    expect(page.get_by_text(f"Alert “{selected_row['title']}” acknowledged.")).to_be_visible()
    admin_tab.wait_until_idle()
    admin_tab.screenshot("alerts-acknowledged")

    after = alert_statuses(db, seeded_org.id)
    changed = {alert_id for alert_id, status in after.items() if status != before.get(alert_id, "open")}
    assert changed == {selected}
    assert after[selected] == "acknowledged"
    assert all(after[item.id] == "open" for item in raised)
    acknowledged_by = alerts.get_alert(db, seeded_org.id, selected)["acknowledged_by"]
    assert acknowledged_by is not None
    admin_tab.assert_no_exception()
