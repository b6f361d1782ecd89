"""Browser tests of the audit log page: keyset paging through the URL cursor, and the filtered CSV export."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import urljoin

import pytest
from playwright.sync_api import expect

from aim.services import audit
from aim.services.actor import system

pytestmark = pytest.mark.e2e

PAGE_SIZE = 100
TOTAL_PATTERN = re.compile(r"·\s+(about\s+)?([\d,]+) events")


def contiguous_ids(db, organization_id, newest: int, oldest: int) -> list[int]:
    """Return the ids of the organization's audit rows from `newest` down to `oldest`, in list order."""
    rows = db.fetch_all(
        "e2e.audit_span",
        """
        WITH bounds AS (
            SELECT (SELECT occurred_at FROM audit_logs WHERE organization_id = %(org)s AND id = %(newest)s) AS high,
                   (SELECT occurred_at FROM audit_logs WHERE organization_id = %(org)s AND id = %(oldest)s) AS low
        )
        SELECT id FROM audit_logs, bounds
        WHERE organization_id = %(org)s
          AND (occurred_at, id) <= (bounds.high, %(newest)s)
          AND (occurred_at, id) >= (bounds.low, %(oldest)s)
        ORDER BY occurred_at DESC, id DESC
        """,
        {"org": organization_id, "newest": newest, "oldest": oldest},
    )
    return [row["id"] for row in rows]


def test_audit_paging_round_trip(admin_tab, seeded_org, db):
    page = admin_tab.page
    admin_tab.open("/audit_logs", "audit_logs")
    expect(admin_tab.pager_caption(1)).to_be_visible()

    def event_ids() -> list[int]:
        return [int(value) for value in admin_tab.grid_column("Event id")]

    def click_and_wait(button: str, number: int) -> None:
        page.locator(f".st-key-audit_table_{button} button").click()
        expect(admin_tab.pager_caption(number)).to_be_visible()
        admin_tab.wait_until_idle()

    first = event_ids()
    admin_tab.screenshot("audit-page-1")
    # Events written while the user pages are newer than the window pinned by the first page
    # (the `at` parameter), so they must not shift the following pages.
    with db.transaction() as conn:
        for number in range(5):
            audit.record(conn, seeded_org.id, system("e2e"), "e2e.paging", "test", str(number))

    click_and_wait("next", 2)
    second = event_ids()
    click_and_wait("next", 3)
    third = event_ids()
    admin_tab.screenshot("audit-page-3")
    click_and_wait("prev", 2)
    second_again = event_ids()
    click_and_wait("prev", 1)
    first_again = event_ids()

    assert len(first) == PAGE_SIZE
    assert len(second) == PAGE_SIZE
    assert len(third) == PAGE_SIZE
    assert not set(first) & set(second)
    assert not set(second) & set(third)
    assert not set(first) & set(third)
    # Nothing skipped or repeated: the three pages are exactly the rows between their ends, in order.
    assert contiguous_ids(db, seeded_org.id, first[0], third[-1]) == first + second + third
    assert second_again == second
    assert first_again == first, "Previous from page 2 did not return the rows page 1 showed before"
    admin_tab.assert_no_exception()


def test_audit_export_matches_filtered_total(admin_tab, seeded_org):
    page = admin_tab.page
    admin_tab.open("/audit_logs", "audit_logs")
    expect(admin_tab.pager_caption(1)).to_be_visible()

    admin_tab.choose_option("Result", "denied")
    page.wait_for_url(re.compile(r"[?&]result=denied"))
    # The chart summary counts the filtered rows, so it shows when the rerun with the filter is drawn.
    expect(page.get_by_text(re.compile(r"success 0 · failure 0 · denied [1-9]"))).to_be_visible()
    admin_tab.wait_until_idle()
    caption = admin_tab.pager_caption(1)
    expect(caption).to_be_visible()
    match = TOTAL_PATTERN.search(caption.inner_text())
    assert match is not None, caption.inner_text()
    assert match.group(1) is None, f"the filtered total is an estimate, so it cannot be compared: {caption.inner_text()}"
    total = int(match.group(2).replace(",", ""))
    assert total > 0
    admin_tab.screenshot("audit-filtered")

    # The link opens the streamed export route; fetch it with the tab's cookies, as the browser would.
    link = page.locator(".st-key-audit_export a").first
    expect(link).to_have_text(re.compile("Export CSV"))
    response = page.request.get(urljoin(page.url, link.get_attribute("href")))
    assert response.status == 200, response.text()
    rows = list(csv.DictReader(io.StringIO(response.body().decode("utf-8"))))

    assert 'filename="aim-audit-' in response.headers["content-disposition"]
    assert len(rows) == total
    assert {row["result"] for row in rows} == {"denied"}
    admin_tab.assert_no_exception()
