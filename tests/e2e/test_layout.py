"""Browser tests of the start-up warm-up and of the pager layout."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

WARMUP_DONE = "dashboard warm-up finished"
WARMUP_FAILED = "dashboard warm-up failed"
# Every text node inside a button fits in its box (scrollWidth counts the text cut off by ellipsis).
LABEL_FITS_SCRIPT = """
(button) => [...button.querySelectorAll('p, span, div')].every((node) => node.scrollWidth <= node.clientWidth + 1)
"""


def test_warm_up_runs_at_server_start(dashboard):
    deadline = time.monotonic() + 120
    log = dashboard.log_since(0)
    while WARMUP_DONE not in log and WARMUP_FAILED not in log and time.monotonic() < deadline:
        time.sleep(0.5)
        log = dashboard.log_since(0)

    assert WARMUP_FAILED not in log
    assert WARMUP_DONE in log


@pytest.mark.parametrize("width", [1600, 1100])
def test_alerts_pager_labels_fit(admin_tab, width):
    page = admin_tab.page
    page.set_viewport_size({"width": width, "height": 1000})
    admin_tab.open("/alerts", "alerts")
    expect(admin_tab.pager_caption(1)).to_be_visible()

    for name in ("first", "prev", "next"):
        button = page.locator(f".st-key-alerts_table_{name} button")
        expect(button).to_be_visible()
        assert button.evaluate(LABEL_FITS_SCRIPT), f"the {name} button's label is cut off at {width} px"
    page.locator(".st-key-alerts_table_next").scroll_into_view_if_needed()
    admin_tab.screenshot(f"alerts-pager-{width}")
