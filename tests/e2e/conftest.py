"""Fixtures of the browser tests: a seeded organization, the real dashboard as a subprocess, and Chromium.

The dashboard is started with `python -m streamlit run app.py` against the test session's database
and Redis key prefix (from the `settings` fixture in tests/conftest.py), so the tests and the
dashboard read and write the same rows. Chromium is driven through Playwright's sync API.

Chromium is looked up in this order: the AIM_CHROMIUM environment variable, /usr/bin/chromium,
chromium-browser, google-chrome, then the browser that `python -m playwright install chromium`
downloaded. With none of them the tests fail with the install command rather than skip.

Screenshots go to test-artifacts/screenshots/e2e/, and each dashboard's server log to
test-artifacts/e2e/.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from aim.config import Settings
from aim.db import migrate
from aim.runtime import Runtime, make_redis
from aim.services import organizations, users
from aim.services.actor import system
from aim.simulate import timeline
from aim.simulate.backfill import run_backfill
from aim.simulate.population import prepare_population
from aim.trust.gather import database_now
from aim.ui.access import PAGE_TITLES

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL_CONFTEST = REPO_ROOT / "tests" / "conftest.py"
ARTIFACTS = REPO_ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots" / "e2e"
SERVER_LOGS = ARTIFACTS / "e2e"

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium-browser", "google-chrome")
INSTALL_HINT = (
    "install one with `apt-get install chromium` (Debian/Ubuntu), or `python -m playwright install chromium` "
    "where downloads are allowed, or point AIM_CHROMIUM at a Chromium or Chrome executable"
)

# The machine running the suite may be busy (2 cores), and a fresh Streamlit process imports pandas
# and Plotly on its first page, so waits are generous. They end as soon as the condition holds.
DEFAULT_TIMEOUT_MS = 30_000
STARTUP_TIMEOUT_S = 90.0
VIEWPORT = {"width": 1600, "height": 1000}

PASSWORD = "e2e-password-0123"
SEED_AGENTS = 20
SEED_DAYS = 2
SEED_AUDIT_ROWS = 5_000

# Heading text of each page, by page key (the key is also the URL path). Navigation links use PAGE_TITLES.
PAGE_HEADINGS = {
    "overview": "Overview",
    "agents": "Agents",
    "mcp_servers": "MCP servers",
    "audit_logs": "Audit logs",
    "alerts": "Alerts",
    "trust": "Trust trends",
    "performance": "Performance",
    "admin": "Admin",
}
SESSION_COOKIE = "aim_session"
CHART_WAIT_MS = 5_000
# True when every Plotly chart that is displayed has drawn its SVG (charts in hidden tabs are skipped).
CHARTS_DRAWN_SCRIPT = """
() => [...document.querySelectorAll('[data-testid="stPlotlyChart"]')]
  .filter((chart) => chart.offsetParent !== null)
  .every((chart) => chart.querySelector('.main-svg') !== null)
"""
ROW_HEIGHT_PX = 35

# Reads one column of a st.dataframe through the accessibility table that glide-data-grid keeps in
# the DOM. That table contains only the rows and columns in view, and it follows scrolling about
# 0.2 s late (measured with Streamlit 1.67). So the script scrolls the column into view and waits
# until the table stops changing. Then it scrolls down one screen at a time and waits for the rows
# to change after each step. It returns {total, values} or {error}.
GRID_COLUMN_SCRIPT = """
async (root, column) => {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const table = () => root.querySelector('table[role=grid]');
  const scroller = () => root.querySelector('.dvn-scroller');
  if (!table() || !scroller()) return {error: 'no data grid in this element'};
  const total = parseInt(table().getAttribute('aria-rowcount'), 10) - 1;
  const columnIndex = () => {
    for (const th of table().querySelectorAll('thead th')) {
      if (th.textContent.trim() === column) return th.getAttribute('aria-colindex');
    }
    return null;
  };
  const snapshot = () => [...table().querySelectorAll('th, tbody tr')]
    .map((node) => node.getAttribute('aria-colindex') || node.getAttribute('aria-rowindex')).join(',');
  const settle = async () => {
    let last = snapshot();
    for (let quiet = 0, waited = 0; quiet < 400 && waited < 3000; waited += 50) {
      await sleep(50);
      const now = snapshot();
      quiet = now === last ? quiet + 50 : 0;
      last = now;
    }
  };
  let index = null;
  for (const left of [null, scroller().scrollWidth, 0]) {
    if (left !== null) scroller().scrollLeft = left;
    await settle();
    index = columnIndex();
    if (index !== null) break;
  }
  if (index === null) return {error: `column ${column} not found`};
  const rowsInView = () => [...table().querySelectorAll('tbody tr')].map((tr) => tr.getAttribute('aria-rowindex')).join(',');
  const values = {};
  const deadline = Date.now() + 30000;
  let top = scroller().scrollTop;
  while (Object.keys(values).length < total && Date.now() < deadline) {
    for (const tr of table().querySelectorAll('tbody tr')) {
      const cell = tr.querySelector(`td[aria-colindex="${index}"]`);
      if (cell) values[tr.getAttribute('aria-rowindex')] = cell.textContent;
    }
    const view = scroller();
    const atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 1;
    // Past the end, start again from the top: rows that were still being drawn are read on the next pass.
    top = atBottom ? 0 : top + Math.max(1, view.clientHeight - 40);
    const before = rowsInView();
    view.scrollTop = top;
    for (let waited = 0; waited < 1500 && rowsInView() === before; waited += 25) await sleep(25);
  }
  const rows = Object.keys(values).map(Number).sort((a, b) => a - b);
  return {total, values: rows.map((row) => values[String(row)])};
}
"""


# --- pytest integration --------------------------------------------------------------------------


def pytest_plugin_registered(plugin: object, manager: pytest.PytestPluginManager) -> None:
    # Without __init__.py files every conftest.py is imported under the module name "conftest", so
    # importing this file replaced tests/conftest.py in sys.modules. Test modules that run
    # `from conftest import ...` mean the top-level file, so it is put back once this one is registered.
    if getattr(plugin, "__file__", None) != __file__ or sys.modules.get("conftest") is not plugin:
        return
    top_level = manager.get_plugin(str(TOP_LEVEL_CONFTEST))
    if top_level is not None:
        sys.modules["conftest"] = top_level


# --- Chromium ------------------------------------------------------------------------------------


def find_chromium(playwright: Playwright) -> str:
    """Return the path of a Chromium or Chrome executable, or fail the session with the install command."""
    configured = os.environ.get("AIM_CHROMIUM", "").strip()
    if configured:
        if Path(configured).is_file() and os.access(configured, os.X_OK):
            return configured
        pytest.fail(f"AIM_CHROMIUM={configured!r} is not an executable file; {INSTALL_HINT}", pytrace=False)
    for candidate in CHROMIUM_CANDIDATES:
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found and os.access(found, os.X_OK):
            return found
    bundled = playwright.chromium.executable_path
    if bundled and Path(bundled).is_file():
        return bundled
    pytest.fail(f"no Chromium found for the browser tests; {INSTALL_HINT}", pytrace=False)


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    executable = find_chromium(playwright_session)
    logger.info("browser tests use Chromium at %s", executable)
    expect.set_options(timeout=DEFAULT_TIMEOUT_MS)
    browser = playwright_session.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
    # Screenshots of failures belong to the run that made them.
    for stale in SCREENSHOTS.glob("failed-*.png"):
        stale.unlink()
    yield browser
    browser.close()


# --- the dashboard process -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass
class Dashboard:
    """A running `streamlit run app.py` process and where its log goes."""

    url: str
    process: subprocess.Popen
    log_path: Path

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        logger.info("dashboard %s stopped (pid %s)", self.url, self.process.pid)


def start_dashboard(settings: Settings, database_url: str, redis_prefix: str, name: str) -> Dashboard:
    """Start the dashboard on a free loopback port against `database_url` and wait for its health check.

    The file watcher is off: the tests run the code as it was when the process started, and a file
    saved meanwhile cannot make Streamlit re-import modules halfway through a test.
    """
    port = free_port()
    SERVER_LOGS.mkdir(parents=True, exist_ok=True)
    log_path = SERVER_LOGS / f"dashboard-{name}.log"
    env = dict(os.environ)
    env.update({
        "AIM_DATABASE_URL": database_url,
        "AIM_REDIS_URL": settings.redis_url,
        "AIM_REDIS_PREFIX": redis_prefix,
        "AIM_DATA_DIR": str(settings.data_dir),
        "AIM_DB_POOL_MIN": "1",
        "AIM_DB_POOL_MAX": "8",
        "AIM_LOG_LEVEL": "INFO",
    })
    env.pop("AIM_DATABASE_REPLICA_URL", None)
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    dashboard = Dashboard(f"http://127.0.0.1:{port}", process, log_path)
    logger.info("dashboard %s starting (pid %s), log in %s", dashboard.url, process.pid, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"the dashboard exited with code {process.returncode} during start-up; its log:\n"
                        f"{dashboard.log_since(0)[-4000:]}", pytrace=False)
        try:
            if httpx.get(f"{dashboard.url}/_stcore/health", timeout=2.0).status_code == 200:
                return dashboard
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            dashboard.stop()
            pytest.fail(f"the dashboard did not respond on /_stcore/health within {STARTUP_TIMEOUT_S:.0f} s; its log:\n"
                        f"{dashboard.log_since(0)[-4000:]}", pytrace=False)
        time.sleep(0.2)


@dataclasses.dataclass(frozen=True)
class SeededOrg:
    """The organization the simulator backfilled, with one dashboard user per role."""

    id: uuid.UUID
    name: str
    emails: dict[str, str]
    password: str


@pytest.fixture(scope="session")
def seeded_org(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> SeededOrg:
    """Backfill a small organization with the simulator and add an admin, an analyst and a viewer."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    # The simulator writes the agents' private keys under the data directory. A temporary directory
    # keeps one key file per session out of the shared test data directory.
    seeding = dataclasses.replace(
        runtime, settings=dataclasses.replace(runtime.settings, data_dir=tmp_path_factory.mktemp("simulator"))
    )
    now = database_now(runtime.db)
    population = prepare_population(
        seeding, organization=name, agent_count=SEED_AGENTS, seed=7,
        registered_at=timeline.registration_times(timeline.window_start(now, SEED_DAYS), now, 7),
        apply_status=False, attest_baselines=False,
    )
    report = run_backfill(seeding, population, days=SEED_DAYS, audit_rows=SEED_AUDIT_ROWS, seed=7)
    logger.info("seeded organization %s: %d audit rows, %d alerts", name, report.audit_rows, report.alerts_raised)

    organization = organizations.get(runtime.db, population.organization_id)
    emails = {}
    for role in ("admin", "analyst", "viewer"):
        email = f"{role}-{organization['id'].hex[:8]}@example.com"
        users.create_user(runtime.db, organization["id"], system("e2e"), email=email, password=PASSWORD, role=role)
        emails[role] = email
    return SeededOrg(organization["id"], name, emails, PASSWORD)


@pytest.fixture(scope="session")
def dashboard(settings: Settings, seeded_org: SeededOrg) -> Iterator[Dashboard]:
    """The dashboard on the session database, started after the organization is seeded."""
    running = start_dashboard(settings, settings.database_url, settings.redis_prefix, "session")
    yield running
    running.stop()


@pytest.fixture
def first_run_dashboard(settings: Settings, empty_database_url: str) -> Iterator[Dashboard]:
    """A dashboard on a freshly migrated database with no organization and no user, and its own Redis prefix."""
    migrate.upgrade(empty_database_url)
    prefix = f"aimtest:{uuid.uuid4().hex[:8]}:"
    running = start_dashboard(settings, empty_database_url, prefix, "first-run")
    yield running
    running.stop()
    client = make_redis(settings.redis_url, settings)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# --- browser pages -------------------------------------------------------------------------------


class DashboardPage:
    """A browser tab on one dashboard, with the waits and reads the tests share."""

    def __init__(self, page: Page, dashboard: Dashboard) -> None:
        self.page = page
        self.dashboard = dashboard

    def goto(self, path: str) -> None:
        self.page.goto(self.dashboard.url + path)

    def open(self, path: str, key: str) -> None:
        """Load `path` (the page with key `key`, plus any query) and wait until it has rendered."""
        self.goto(path)
        expect(self.heading(key)).to_be_visible()
        self.wait_until_idle()

    def heading(self, key: str):
        return self.page.get_by_role("heading", name=PAGE_HEADINGS[key], level=2)

    def sign_in(self, email: str, password: str, path: str = "/overview") -> None:
        """Open `path`, sign in on the screen it shows, and wait for the signed-in page and its cookie.

        The sign-in starts on a page URL rather than "/": see `test_sign_in_at_root_keeps_session`
        for the root URL, where the cookie can be lost.
        """
        self.goto(path)
        self.page.locator(".st-key-sign_in_email input").fill(email)
        self.page.locator(".st-key-sign_in_password input").fill(password)
        self.page.get_by_role("button", name="Sign in", exact=True).click()
        expect(self.page.get_by_test_id("stSidebar")).to_contain_text(email)
        assert self.wait_for_session_cookie() is not None, f"no session cookie after signing in at {path}"
        self.wait_until_idle()

    def session_cookie(self) -> str | None:
        for cookie in self.page.context.cookies():
            if cookie["name"] == SESSION_COOKIE:
                return cookie["value"]
        return None

    def wait_for_session_cookie(self, timeout_s: float = 10.0) -> str | None:
        """Return the session cookie once the browser has it, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.session_cookie()
            if value:
                return value
            self.page.wait_for_timeout(50)
        return None

    def wait_until_idle(self) -> None:
        """Wait until no script or fragment run is in progress and no element is left over from the last run."""
        expect(self.page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
        expect(self.page.locator('[data-stale="true"]')).to_have_count(0)

    def open_page(self, key: str) -> None:
        """Click the page's link in the sidebar navigation and wait for its heading."""
        started = time.monotonic()
        nav = self.page.get_by_test_id("stSidebarNav")
        nav.get_by_role("link", name=PAGE_TITLES[key], exact=True).click()
        self.page.wait_for_url(re.compile(rf"/{key}(\?|$)"))
        expect(self.heading(key)).to_be_visible()
        self.wait_until_idle()
        logger.info("page %s opened and idle after %.2f s", key, time.monotonic() - started)

    def grid_column(self, column: str, index: int = 0) -> list[str]:
        """Return every value of `column` in the `index`-th st.dataframe of the page, top to bottom."""
        grid = self.page.get_by_test_id("stDataFrame").nth(index)
        expect(grid.locator("table[role=grid]")).to_be_attached()
        started = time.monotonic()
        result: dict[str, Any] = grid.evaluate(GRID_COLUMN_SCRIPT, column)
        logger.info("read column %r of %s rows in %.2f s", column, result.get("total"), time.monotonic() - started)
        assert "error" not in result, result.get("error")
        assert len(result["values"]) == result["total"], (
            f"read {len(result['values'])} of the {result['total']} rows of column {column!r}"
        )
        return result["values"]

    def select_grid_row(self, row: int, index: int = 0) -> None:
        """Tick the row-selection checkbox of row `row` (0 is the first data row) in the `index`-th st.dataframe.

        The grid is a canvas, so the click goes to coordinates: Streamlit 1.67 draws the header and
        each row 35 px high, with the selection checkboxes in the first 35 px of every row.
        """
        grid = self.page.get_by_test_id("stDataFrame").nth(index)
        expect(grid.locator("table[role=grid]")).to_be_attached()
        box = grid.bounding_box()
        assert box is not None, "the data grid is not visible"
        self.page.mouse.click(box["x"] + ROW_HEIGHT_PX / 2, box["y"] + ROW_HEIGHT_PX * (row + 1.5))

    def choose_option(self, label: str, option: str) -> None:
        """Pick `option` in the st.selectbox labelled `label`.

        The rerun that the choice starts may not have begun when this returns, so the caller waits
        for the change it expects on the page.
        """
        self.page.get_by_role("combobox", name=label, exact=True).click()
        self.page.get_by_role("option", name=option, exact=True).click()
        self.wait_until_idle()

    def caption(self, pattern: str):
        """Return the locator of the one caption whose text matches the regular expression `pattern`."""
        return self.page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(pattern))

    def pager_caption(self, number: int):
        """Return the locator of the "Page N · ..." caption under a paged table."""
        return self.caption(rf"^Page {number} ·")

    def assert_no_exception(self) -> None:
        expect(self.page.get_by_test_id("stException")).to_have_count(0)
        assert "Traceback" not in self.page.get_by_test_id("stApp").inner_text()

    def screenshot(self, name: str) -> Path:
        """Save the viewport to test-artifacts/screenshots/e2e/<name>.png once the visible charts are drawn."""
        started = time.monotonic()
        try:
            self.page.wait_for_function(CHARTS_DRAWN_SCRIPT, timeout=CHART_WAIT_MS)
        except PlaywrightTimeoutError:
            # The screenshot is for people to look at, so a chart still drawing is no test failure.
            logger.info("charts still drawing when taking screenshot %s", name)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        logger.info("screenshot %s saved after %.2f s", path.name, time.monotonic() - started)
        return path


def _new_page(browser: Browser, storage_state: dict | None = None) -> tuple[BrowserContext, Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, storage_state=storage_state)
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    return context, context.new_page()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    # Keeps each phase's report on the test item, so the page fixture can save a screenshot of a failure.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def open_tab(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., DashboardPage]]:
    """Return a function that opens a new browser context on a dashboard, optionally with saved cookies."""
    opened: list[tuple[BrowserContext, DashboardPage]] = []

    def open_on(target: Dashboard, storage_state: dict | None = None) -> DashboardPage:
        context, page = _new_page(browser, storage_state)
        tab = DashboardPage(page, target)
        opened.append((context, tab))
        return tab

    yield open_on
    failed = getattr(request.node, "report_call", None) is not None and request.node.report_call.failed
    for number, (context, tab) in enumerate(opened):
        if failed:
            tab.screenshot(f"failed-{request.node.name}-{number}")
        context.close()


@pytest.fixture
def tab(open_tab: Callable[..., DashboardPage], dashboard: Dashboard) -> DashboardPage:
    """A browser tab on the session dashboard, not signed in."""
    return open_tab(dashboard)


@pytest.fixture(scope="session")
def admin_cookies(browser: Browser, dashboard: Dashboard, seeded_org: SeededOrg) -> dict:
    """The browser storage state (session cookie) of the seeded admin, signed in once for the session.

    Tabs opened with it start signed in through the cookie, as a returning user's browser does, which
    spares each test the sign-in form. The sign-in form itself is tested in test_sign_in.py.
    """
    context, page = _new_page(browser)
    DashboardPage(page, dashboard).sign_in(seeded_org.emails["admin"], seeded_org.password, "/overview")
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def admin_tab(open_tab: Callable[..., DashboardPage], dashboard: Dashboard, admin_cookies: dict) -> DashboardPage:
    """A browser tab on the session dashboard, in a browser context that has the seeded admin's session cookie."""
    return open_tab(dashboard, admin_cookies)
