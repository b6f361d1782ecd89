"""AIM dashboard entry point: sign-in gate, role-filtered navigation and the shared sidebar.

Run with `streamlit run app.py`. Pages live in pages/ and are registered here with st.navigation.
Pages a role may not open are registered hidden, so opening one by URL shows a clear message from
`require_page` instead of Streamlit's "page not found".

This file plays two parts. `streamlit run app.py` finds the st.App assignment at the bottom, imports
the file as the module `app` and serves that App with uvicorn. Its lifespan hook warms the process
(aim.ui.warmup) before the first browser connects. Each browser session then runs the file as the
script `__main__`, which renders the dashboard.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import streamlit as st

from aim.errors import AIMError
from aim.metrics.rollup import RECORDER
from aim.runtime import get_runtime
from aim.services.users import AuthenticationFailed
from aim.ui import auth, export_route, timefmt, warmup
from aim.ui.access import PAGE_TITLES, allowed_pages, can_open, can_write
from aim.ui.errors import error_message, page_guard

logger = logging.getLogger("aim.ui.app")

APP_DIR = Path(__file__).resolve().parent
PAGE_ICONS = {
    "overview": ":material/dashboard:",
    "agents": ":material/smart_toy:",
    "mcp_servers": ":material/dns:",
    "audit_logs": ":material/receipt_long:",
    "alerts": ":material/notifications_active:",
    "trust": ":material/verified_user:",
    "performance": ":material/speed:",
    "admin": ":material/admin_panel_settings:",
}
SECTIONS = {
    "Monitor": ("overview", "alerts", "trust", "performance"),
    "Inventory": ("agents", "mcp_servers"),
    "Governance": ("audit_logs", "admin"),
}
HOME_PATH = "home"
# Session-state key that lists the page keys shown in the navigation (read by tests).
NAV_PAGES_KEY = "aim_nav_pages"
LOGO_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="32" viewBox="0 0 120 32">'
    '<path d="M16 2 L28 7 V15 C28 23 22 28 16 30 C10 28 4 23 4 15 V7 Z" fill="#3d8bfd"/>'
    '<path d="M10 16 L14.5 20.5 L22 12" stroke="#0f1217" stroke-width="3" fill="none" stroke-linecap="round"/>'
    '<text x="36" y="22" font-family="sans-serif" font-size="17" font-weight="700" fill="#d6dbe3">AIM</text>'
    "</svg>"
)
FAVICON = Path(__file__).resolve().parent / "aim" / "ui" / "assets" / "favicon.svg"
ROLE_BADGE_COLORS = {"admin": "red", "analyst": "blue", "manager": "violet", "viewer": "gray"}


def sync_timezone() -> None:
    """Keep st.session_state["timezone"] and the `tz` query parameter in step.

    A `tz` in the URL wins when a browser session starts, so a shared link shows the sender's zone.
    After that the sidebar picker is the source and the URL mirrors it.
    """
    if "timezone" not in st.session_state:
        requested = st.query_params.get("tz")
        try:
            st.session_state["timezone"] = timefmt.validate_timezone(requested) if requested else timefmt.DEFAULT_TIMEZONE
        except AIMError:
            logger.info("ignoring unknown timezone %r from the URL", requested)
            st.session_state["timezone"] = timefmt.DEFAULT_TIMEZONE


def render_first_run() -> None:
    """Render the first screen of a fresh instance, which creates the organization and its admin."""
    _, middle, _ = st.columns([1, 1.3, 1])
    with middle:
        st.markdown("## :material/verified_user: AIM")
        st.caption("Agent Identity Management")
        with st.container(border=True):
            st.markdown("#### Create the first admin")
            st.caption("No user exists yet. The account you create here is the organization's admin.")
            with st.form("first_run", border=False):
                organization = st.text_input("Organization name", key="first_run_organization", max_chars=200)
                email = st.text_input("Admin email", key="first_run_email", placeholder="you@example.com")
                password = st.text_input("Password", type="password", key="first_run_password",
                                         help="At least 12 characters.")
                password_again = st.text_input("Password again", type="password", key="first_run_password_again")
                submitted = st.form_submit_button("Create admin and sign in", type="primary", width="stretch")
            if submitted:
                try:
                    auth.create_first_admin(email, password, password_again, organization)
                except AIMError as exc:
                    st.error(error_message(exc), icon=":material/error:")
                else:
                    st.rerun()


def render_sign_in() -> None:
    """Render the sign-in screen: email and password, plus single sign-on when OIDC is configured."""
    _, middle, _ = st.columns([1, 1.1, 1])
    with middle:
        st.markdown("## :material/verified_user: AIM")
        st.caption("Agent Identity Management")
        flash = st.session_state.pop(auth.FLASH_KEY, None)
        if flash:
            st.info(flash, icon=":material/info:")
        with st.container(border=True):
            st.markdown("#### Sign in")
            with st.form("sign_in", border=False):
                email = st.text_input("Email", key="sign_in_email", placeholder="you@example.com",
                                      autocomplete="username")
                # Without an autocomplete argument Streamlit marks password inputs "new-password", so
                # password managers would not fill a sign-in form.
                password = st.text_input("Password", type="password", key="sign_in_password",
                                         autocomplete="current-password")
                submitted = st.form_submit_button("Sign in", type="primary", width="stretch")
            if submitted:
                try:
                    auth.sign_in_with_password(email, password)
                except AuthenticationFailed as exc:
                    st.error(f"Sign-in failed: {exc.message}.", icon=":material/error:")
                else:
                    st.rerun()
            if auth.oidc_configured():
                st.divider()
                if st.user.is_logged_in:
                    # Signed in at the identity provider, but no local user matched (see the message above).
                    st.button("Sign out of single sign-on", key="sign_out_oidc", on_click=st.logout,
                              icon=":material/logout:", width="stretch")
                else:
                    st.button("Sign in with single sign-on", key="sign_in_oidc", on_click=st.login,
                              icon=":material/key:", width="stretch")


def render_gate() -> None:
    """Show the first-run or sign-in screen as the only (hidden) page."""
    with page_guard("sign-in"):
        if auth.needs_first_admin():
            render_first_run()
        else:
            render_sign_in()


@st.cache_resource(show_spinner=False)
def start_metrics_flusher() -> bool:
    """Start this process's metric roll-up flusher once, so dashboard DB and cache lookups reach the panels.

    Returns False without starting it under AppTest, where a background flusher would write the
    observations of unrelated tests in the same process.
    """
    if st.get_option("global.appTest"):
        return False
    runtime = get_runtime()
    RECORDER.start(runtime.db, runtime.settings.metrics_flush_interval_s)
    return True


def open_overview() -> None:
    """Forward the default page at "/" to the overview, keeping query parameters such as tz."""
    st.switch_page(str(APP_DIR / "pages" / "overview.py"), query_params=st.query_params.to_dict())


@st.cache_resource(show_spinner=False)
def warn_missing_page(path: str) -> None:
    """Log a missing page file once per process rather than on every rerun (cache_resource survives reruns)."""
    logger.warning("dashboard page %s is missing; it is left out of the navigation", path)


def build_navigation(role: str) -> dict[str, list[st.Page]]:
    """Register every page that exists, visible when `role` may open it and hidden otherwise."""
    visible = set(allowed_pages(role))
    # Streamlit serves the default page at "/" only, so a page that is the default has no working
    # /<url_path> link. A hidden home page takes the default slot and forwards to the overview.
    sections: dict[str, list[st.Page]] = {
        next(iter(SECTIONS)): [st.Page(open_overview, title="Home", url_path=HOME_PATH, default=True,
                                       visibility="hidden")],
    }
    shown: list[str] = []
    for section, keys in SECTIONS.items():
        for key in keys:
            path = APP_DIR / "pages" / f"{key}.py"
            if not path.is_file():
                warn_missing_page(str(path))
                continue
            page = st.Page(
                path, title=PAGE_TITLES[key], icon=PAGE_ICONS[key], url_path=key,
                visibility="visible" if key in visible else "hidden",
            )
            sections.setdefault(section, []).append(page)
            if key in visible:
                shown.append(key)
    st.session_state[NAV_PAGES_KEY] = [key for key in PAGE_TITLES if key in shown]
    return sections


def render_sidebar(user: dict, *, write_cookie: bool = True) -> None:
    """Render the user block, timezone picker and sign-out button below the navigation."""
    with st.sidebar:
        with st.container(border=True):
            st.markdown(f"**{html.escape(user['organization_name'])}**")
            # st.html, because markdown would turn the email into a mailto link.
            st.html(f"<div style='font-size:0.85rem;opacity:0.7'>{html.escape(user['email'])}</div>")
            mode = "read and write" if can_write(user["role"]) else "read-only"
            st.badge(f"{user['role']} · {mode}", color=ROLE_BADGE_COLORS.get(user["role"], "gray"))
        st.selectbox(
            "Timezone", timefmt.timezone_names(), key="timezone",
            help="Times in tables, charts and CSV exports are shown in this IANA timezone.",
        )
        st.query_params["tz"] = st.session_state["timezone"]
        st.button("Sign out", key="sign_out", on_click=auth.sign_out, icon=":material/logout:", width="stretch")
        if write_cookie:
            auth.render_cookie_script()


def main() -> None:
    st.set_page_config(
        page_title="AIM · Agent Identity Management",
        # A file served by Streamlit itself: a :material/...: icon is fetched from fonts.gstatic.com,
        # which an offline or locked-down machine cannot reach.
        page_icon=str(FAVICON),
        layout="wide",
        initial_sidebar_state="expanded",
    )
    with page_guard("metrics"):
        start_metrics_flusher()
    sync_timezone()
    with page_guard("session"):
        user = auth.current_user()
    if user is None:
        st.session_state[NAV_PAGES_KEY] = []
        # Every page URL leads to the sign-in screen, so a deep link opens its page after sign-in.
        gate_pages = [st.Page(render_gate, title="Sign in", url_path=HOME_PATH, default=True)]
        gate_pages += [st.Page(render_gate, title="Sign in", url_path=key) for key in PAGE_TITLES]
        navigation = st.navigation(gate_pages, position="hidden")
        auth.render_cookie_script()
        navigation.run()
        return
    st.logo(LOGO_SVG, size="large")
    navigation = st.navigation(build_navigation(user["role"]), position="sidebar")
    # The home page switches to the overview at once, and the browser drops a script rendered in a
    # run that switches pages, so a pending cookie is written on the overview's run instead.
    write_cookie = navigation.url_path not in ("", HOME_PATH)
    if not can_open(user["role"], navigation.url_path):
        # The page will st.stop() after its message, and nothing renders after st.stop(), so the
        # sidebar goes first. This also covers the home page, which is not a page key.
        render_sidebar(user, write_cookie=write_cookie)
        navigation.run()
        return
    # An allowed page runs before the user block and timezone picker, so its heading and first
    # figures reach the browser first. `finally` keeps the sidebar when the page raises.
    try:
        navigation.run()
    finally:
        render_sidebar(user, write_cookie=write_cookie)


if __name__ == "__main__":
    # A script run of a browser session (Streamlit and AppTest run the script as `__main__`).
    with auth.shell_running():
        main()
else:
    # Imported by `streamlit run app.py`, which serves this App. The script above renders the pages.
    # The CSV export streams from its own route, because st.download_button keeps the whole file in memory.
    app = st.App(__file__, lifespan=warmup.lifespan, routes=export_route.ROUTES)
