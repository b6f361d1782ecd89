"""Browser tests of the sign-in gate: the first-run admin, sessions that survive a reload, and role gating."""

from __future__ import annotations

import psycopg
import pytest
from playwright.sync_api import expect

from aim.ui.access import PAGE_TITLES, allowed_pages

pytestmark = pytest.mark.e2e

ORGANIZATION = "First Run Org"
ADMIN_EMAIL = "first-admin@example.com"
ADMIN_PASSWORD = "first-run-password-42"
# Signing in at "/" loses the session cookie in some runs (see the test below), so it is tried
# this many times. Each attempt is one sign-in and one reload.
ROOT_SIGN_IN_ATTEMPTS = 3


def test_first_run_creates_admin(open_tab, first_run_dashboard, empty_database_url):
    tab = open_tab(first_run_dashboard)
    page = tab.page
    tab.goto("/")
    expect(page.get_by_role("heading", name="Create the first admin")).to_be_visible()
    tab.screenshot("first-run")

    page.locator(".st-key-first_run_organization input").fill(ORGANIZATION)
    page.locator(".st-key-first_run_email input").fill(ADMIN_EMAIL)
    page.locator(".st-key-first_run_password input").fill(ADMIN_PASSWORD)
    page.locator(".st-key-first_run_password_again input").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create admin and sign in").click()
    expect(tab.heading("overview")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_contain_text(ADMIN_EMAIL)
    tab.wait_until_idle()
    tab.screenshot("first-run-signed-in")

    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT u.email, u.role, o.name FROM users u JOIN organizations o ON o.id = u.organization_id"
        ).fetchall()
    assert rows == [(ADMIN_EMAIL, "admin", ORGANIZATION)]

    # Sign out, then sign in with the new password on the sign-in screen.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.locator(".st-key-sign_in_email input").fill(ADMIN_EMAIL)
    page.locator(".st-key-sign_in_password input").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_test_id("stSidebar")).to_contain_text(ADMIN_EMAIL)
    assert tab.wait_for_session_cookie() is not None, "the browser never received the session cookie"

    page.reload()
    expect(tab.heading("overview")).to_be_visible()
    expect(page.get_by_test_id("stSidebar")).to_contain_text(ADMIN_EMAIL)
    expect(page.get_by_role("heading", name="Sign in")).to_have_count(0)
    tab.wait_until_idle()
    tab.assert_no_exception()
    tab.screenshot("first-run-after-reload")


def test_sign_in_at_root_keeps_session(open_tab, dashboard, seeded_org):
    """Sign in at "/" (which forwards to the overview) and reload; the session must survive every time."""
    email = seeded_org.emails["analyst"]
    for attempt in range(1, ROOT_SIGN_IN_ATTEMPTS + 1):
        tab = open_tab(dashboard)
        page = tab.page
        tab.goto("/")
        page.locator(".st-key-sign_in_email input").fill(email)
        page.locator(".st-key-sign_in_password input").fill(seeded_org.password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(tab.heading("overview")).to_be_visible()
        cookie = tab.wait_for_session_cookie(timeout_s=5.0)
        assert cookie is not None, f"attempt {attempt}: the session cookie was never written after signing in at /"

        page.reload()
        expect(tab.heading("overview")).to_be_visible()
        expect(page.get_by_test_id("stSidebar")).to_contain_text(email)


def test_viewer_cannot_open_admin(tab, seeded_org):
    page = tab.page
    tab.sign_in(seeded_org.emails["viewer"], seeded_org.password, "/overview")
    expect(tab.heading("overview")).to_be_visible()
    nav = page.get_by_test_id("stSidebarNav")
    for key in allowed_pages("viewer"):
        expect(nav.get_by_role("link", name=PAGE_TITLES[key], exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name=PAGE_TITLES["admin"], exact=True)).to_have_count(0)
    expect(nav.get_by_role("link", name=PAGE_TITLES["trust"], exact=True)).to_have_count(0)
    expect(page.get_by_test_id("stSidebar")).to_contain_text("viewer · read-only")
    tab.screenshot("viewer-overview")

    tab.goto("/admin")
    expect(page.get_by_text("Your role viewer cannot open Admin")).to_be_visible()
    tab.wait_until_idle()
    expect(tab.heading("admin")).to_have_count(0)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(0)
    expect(page.get_by_role("tab", name="Users")).to_have_count(0)
    tab.assert_no_exception()
    tab.screenshot("viewer-admin-refused")
