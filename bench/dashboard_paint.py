"""Measure the dashboard's first useful paint, page-switch time and the Streamlit process's memory.

Usage:
    python3 bench/dashboard_paint.py --url http://127.0.0.1:8501 [--email E --password P] [--pid PID]
    python3 bench/dashboard_paint.py --data-dir DIR [--org demo]

With --url the dashboard is already running against seeded data (for example after
`aim simulate --agents 1000 --backfill 30 --audit-rows 1000000`). Without it the script starts
`python -m streamlit run app.py` itself on a free loopback port with AIM_DATA_DIR=--data-dir, and
stops it at the end. Without --email and --password it signs in as `dashboard-bench@example.com`,
an admin it creates in --org on first use; the password is kept in <data dir>/dashboard-bench-password.
That needs the same database as the dashboard, which the AIM_* variables and --data-dir name.

Figures, each over --tries runs, after one warm-up visit of every page:

- first useful paint: from navigation start (performance.timeOrigin) until the first KPI card or
  table of the overview (or of --path) is visible, read in the page with requestAnimationFrame. "new tab" opens
  a tab in a browser that has loaded the dashboard before (static files cached), "new browser" a
  fresh browser context each time.
- page switch: from the click on a sidebar link until the target page's heading is visible, and
  until the page has finished rendering (no script run in progress, no stale element left).
- RSS of the Streamlit process (and its children) after visiting every page, with psutil.
- CPU time (user + system) of the Streamlit process per first paint and per page switch, with
  psutil. Contention from other processes distorts it less than the wall-clock figures.
- with --cold-starts N (only when the script starts the dashboard): N times, start a new Streamlit
  process, wait for /_stcore/health, and load the overview in a fresh browser context that already
  has a session cookie. That is the first request the process serves, so it pays for every
  one-off cost of the process (imports, pools, first queries) that start-up has not already paid.

Targets from the design: first useful paint <= 1.5 s, page switch <= 0.5 s, RSS <= 400 MB.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentiles_ms

from aim.config import load_settings
from aim.errors import Conflict
from aim.runtime import Runtime, build_runtime
from aim.services import organizations, sessions, users
from aim.services.actor import system
from aim.ui.access import PAGE_TITLES
from aim.ui.auth import COOKIE_NAME, DASHBOARD_SESSION_LIFETIME, sign_session_cookie

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium-browser", "google-chrome")
BENCH_EMAIL = "dashboard-bench@example.com"
PASSWORD_FILE = "dashboard-bench-password"
PAGE_HEADINGS = {
    "overview": "Overview", "agents": "Agents", "mcp_servers": "MCP servers", "audit_logs": "Audit logs",
    "alerts": "Alerts", "trust": "Trust trends", "performance": "Performance", "admin": "Admin",
}
TARGETS = {"first_paint_s": 1.5, "switch_s": 0.5, "rss_mb": 400.0}
TIMEOUT_MS = 120_000

# Records in window.__aimFirstUseful the time (ms since navigation start) at which the first KPI card
# or table is visible, and in window.__aimFirstHeading when the page heading is. Installed before
# any page script runs.
FIRST_USEFUL_SCRIPT = """
(() => {
  const visible = (selector) => [...document.querySelectorAll(selector)].some((element) => {
    const box = element.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  });
  const check = () => {
    if (window.__aimFirstHeading === undefined && visible('[data-testid="stMain"] h2')) {
      window.__aimFirstHeading = performance.now();
    }
    if (visible('[data-testid="stMetric"], [data-testid="stDataFrame"]')) {
      window.__aimFirstUseful = performance.now();
      return;
    }
    requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})();
"""
# Milestones of one page load in ms since navigation start: the HTML document loaded, the page
# heading visible (the first output of the page script), the first KPI card or table visible.
MILESTONES_SCRIPT = """
() => ({
  document: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd,
  heading: window.__aimFirstHeading,
  useful: window.__aimFirstUseful,
})
"""

# Clicks the sidebar link of a page and returns {heading, rendered}: the ms until its heading is
# visible and until the page has finished rendering, timed in the page.
SWITCH_SCRIPT = """
async ([key, heading]) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const link = [...document.querySelectorAll('[data-testid="stSidebarNav"] a')]
    .find((a) => new URL(a.href).pathname.endsWith('/' + key));
  if (!link) return {error: `no navigation link to ${key}`};
  const headingVisible = () => [...document.querySelectorAll('h2')].some((h) => {
    const box = h.getBoundingClientRect();
    return box.height > 0 && h.textContent.includes(heading) && !h.closest('[data-stale="true"]');
  });
  const idle = () => document.querySelector('[data-testid="stApp"]')
      ?.getAttribute('data-test-script-state') === 'notRunning'
    && document.querySelector('[data-stale="true"]') === null;
  const start = performance.now();
  link.click();
  const deadline = start + 60000;
  while (!headingVisible()) {
    if (performance.now() > deadline) return {error: `heading ${heading} did not appear`};
    await frame();
  }
  const headingAt = performance.now();
  while (!idle()) {
    if (performance.now() > deadline) return {error: `page ${key} did not finish rendering`};
    await frame();
  }
  return {heading: headingAt - start, rendered: performance.now() - start};
}
"""


@dataclasses.dataclass
class Target:
    """The dashboard under test: its URL, the process to measure, and the process this script started."""

    url: str
    pid: int | None
    started: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.started is not None and self.started.poll() is None:
            self.started.terminate()
            try:
                self.started.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.started.kill()


def find_chromium(playwright: Playwright, configured: str | None) -> str:
    configured = configured or os.environ.get("AIM_CHROMIUM")
    if configured:
        return configured
    for candidate in CHROMIUM_CANDIDATES:
        found = candidate if Path(candidate).is_file() else shutil.which(candidate)
        if found:
            return found
    bundled = playwright.chromium.executable_path
    if bundled and Path(bundled).is_file():
        return bundled
    raise SystemExit("no Chromium found: install one with `apt-get install chromium`, or "
                     "`python -m playwright install chromium` where downloads are allowed, or pass --chromium")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"the dashboard exited with code {process.returncode} during start-up")
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url}/_stcore/health did not respond within {timeout_s:.0f} s; is the dashboard running?")


def start_dashboard(data_dir: Path, log_path: Path) -> Target:
    port = free_port()
    env = dict(os.environ, AIM_DATA_DIR=str(data_dir.resolve()))
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = Target(f"http://127.0.0.1:{port}", process.pid, process)
    try:
        wait_healthy(target.url, process)
    except BaseException:
        target.stop()
        raise
    return target


def listener_pid(url: str) -> int | None:
    """Return the pid of the local process listening on the URL's port, or None when it cannot be found."""
    port = urlsplit(url).port
    try:
        for connection in psutil.net_connections(kind="tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                return connection.pid
    except psutil.AccessDenied:
        return None
    return None


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / (1024 * 1024)


def bench_user(runtime: Runtime, organization: str, data_dir: Path) -> tuple[str, str]:
    """Return (email, password) of the benchmark's admin in `organization`, creating it on first use."""
    password_path = data_dir / PASSWORD_FILE
    org = organizations.get_by_name(runtime.db, organization)
    if password_path.exists():
        return BENCH_EMAIL, password_path.read_text().strip()
    password = secrets.token_urlsafe(18)
    try:
        users.create_user(runtime.db, org["id"], system("dashboard-bench"), email=BENCH_EMAIL, password=password,
                          role="admin")
    except Conflict:
        raise SystemExit(f"{BENCH_EMAIL} exists but {password_path} is missing; pass --email and --password") from None
    password_path.write_text(password)
    password_path.chmod(0o600)
    return BENCH_EMAIL, password


def data_size(runtime: Runtime, organization: str) -> str:
    org = organizations.get_by_name(runtime.db, organization)
    counts = runtime.db.fetch_one(
        "bench.dashboard_size",
        """SELECT (SELECT count(*) FROM agents WHERE organization_id = %(org)s) AS agents,
                  (SELECT count(*) FROM audit_logs WHERE organization_id = %(org)s) AS audit_rows,
                  (SELECT count(*) FROM alerts WHERE organization_id = %(org)s) AS alerts,
                  (SELECT count(*) FROM mcp_servers WHERE organization_id = %(org)s) AS mcp_servers""",
        {"org": org["id"]},
    )
    return ", ".join(f"{value:,} {name.replace('_', ' ')}" for name, value in counts.items())


def session_cookie(runtime: Runtime, email: str, password: str, url: str) -> dict[str, str]:
    """Start a dashboard session for `email` and return it as a Playwright cookie for `url`."""
    pair = sessions.login(runtime.db, runtime.secret_key, email, password, user_agent="dashboard-bench")
    expires_at = int(time.time() + DASHBOARD_SESSION_LIFETIME.total_seconds())
    value = sign_session_cookie(runtime.secret_key, pair.session_id, expires_at)
    return {"name": COOKIE_NAME, "value": value, "url": url, "sameSite": "Strict"}


def cold_starts(browser: Browser, runtime: Runtime, data_dir: Path, email: str, password: str,
                count: int) -> list[dict[str, float]]:
    """Start `count` new dashboard processes and return the first paint each one serves (see --cold-starts)."""
    results = []
    for run in range(count):
        target = start_dashboard(data_dir, data_dir / f"dashboard-bench-cold-{run}.log")
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            context.add_cookies([session_cookie(runtime, email, password, target.url)])
            results.append(first_useful_paint(context.new_page(), target.url))
            context.close()
        finally:
            target.stop()
    return results


def sign_in(page: Page, url: str, email: str, password: str) -> None:
    # Signing in on a page URL, not "/": the overview then renders in the same run as the sign-in.
    page.goto(f"{url}/overview")
    page.locator(".st-key-sign_in_email input").fill(email)
    page.locator(".st-key-sign_in_password input").fill(password)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_test_id("stSidebar").get_by_text(email).wait_for()
    deadline = time.monotonic() + 10
    while not any(cookie["name"] == "aim_session" for cookie in page.context.cookies()):
        if time.monotonic() > deadline:
            raise SystemExit("the session cookie was not written after signing in")
        page.wait_for_timeout(50)


def first_useful_paint(page: Page, url: str, path: str = "/overview") -> dict[str, float]:
    """Load `path` and return its milestones in seconds since navigation start (see MILESTONES_SCRIPT)."""
    page.add_init_script(FIRST_USEFUL_SCRIPT)
    page.goto(f"{url}{path}", wait_until="commit")
    page.wait_for_function("window.__aimFirstUseful !== undefined", timeout=TIMEOUT_MS)
    milestones = page.evaluate(MILESTONES_SCRIPT)
    return {name: value / 1000.0 for name, value in milestones.items() if value is not None}


def switch(page: Page, key: str) -> tuple[float, float]:
    result = page.evaluate(SWITCH_SCRIPT, [key, PAGE_HEADINGS[key]])
    if "error" in result:
        raise SystemExit(result["error"])
    return result["heading"] / 1000.0, result["rendered"] / 1000.0


def report(label: str, samples: list[float], target: float | None) -> None:
    p50, p95 = percentiles_ms(samples)
    verdict = ""
    if target is not None and p95 <= target * 1000:
        verdict = "  within target"
    elif target is not None:
        verdict = f"  ABOVE target {target} s"
    print(f"{label:<44} p50 {p50:8.0f} ms   p95 {p95:8.0f} ms   (n={len(samples)}){verdict}")


def cpu_seconds(pid: int | None) -> float:
    """Return the user + system CPU time of process `pid` so far, or 0.0 without a pid."""
    if pid is None:
        return 0.0
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(browser: Browser, url: str, email: str, password: str, tries: int, pid: int | None = None,
            path: str = "/overview") -> dict:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    sign_in(page, url, email, password)
    state = context.storage_state()
    pages = [key for key in PAGE_TITLES if key != "overview"] + ["overview"]
    # Warm-up: one visit of every page, so the server's caches are as a working day leaves them.
    for key in pages:
        switch(page, key)

    results: dict[str, list[dict[str, float]]] = {"new tab": [], "new browser": []}
    paint_cpu_started = cpu_seconds(pid)
    for _ in range(tries):
        tab = context.new_page()
        results["new tab"].append(first_useful_paint(tab, url, path))
        tab.close()
        fresh = browser.new_context(viewport={"width": 1600, "height": 1000}, storage_state=state)
        fresh.set_default_timeout(TIMEOUT_MS)
        results["new browser"].append(first_useful_paint(fresh.new_page(), url, path))
        fresh.close()

    paint_cpu = (cpu_seconds(pid) - paint_cpu_started) / (2 * tries)

    headings: dict[str, list[float]] = {key: [] for key in pages}
    rendered: dict[str, list[float]] = {key: [] for key in pages}
    switch_cpu_started = cpu_seconds(pid)
    for _ in range(tries):
        for key in pages:
            seen, done = switch(page, key)
            headings[key].append(seen)
            rendered[key].append(done)
    switch_cpu = (cpu_seconds(pid) - switch_cpu_started) / (tries * len(pages))
    context.close()
    return {"paint": results, "headings": headings, "rendered": rendered, "paint_cpu_s": paint_cpu,
            "switch_cpu_s": switch_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running dashboard; without it the script starts one")
    parser.add_argument("--data-dir", type=Path, help="AIM data directory (default: AIM_DATA_DIR)")
    parser.add_argument("--org", default="demo", help="organization whose data is shown (default: demo)")
    parser.add_argument("--email", help="dashboard user to sign in as (default: the benchmark's own admin)")
    parser.add_argument("--password", help="password of --email")
    parser.add_argument("--pid", type=int, help="pid of the Streamlit process behind --url (default: found by port)")
    parser.add_argument("--tries", type=int, default=10, help="runs per measurement (default: 10)")
    parser.add_argument("--chromium", help="Chromium executable (default: AIM_CHROMIUM, then the usual paths)")
    parser.add_argument("--path", default="/overview",
                        help="page, with any query, whose first useful paint is timed, such as "
                             "/audit_logs?range=now-30d (default: /overview)")
    parser.add_argument("--cold-starts", type=int, default=0,
                        help="also time the first paint of N newly started dashboard processes (default: 0; "
                             "not with --url)")
    args = parser.parse_args()
    if args.cold_starts and args.url:
        parser.error("--cold-starts starts its own dashboards, so it cannot be combined with --url")
    if not args.path.startswith("/"):
        parser.error(f"--path {args.path!r} is invalid; expected a path that starts with /, such as /overview")
    if args.cold_starts < 0:
        parser.error("--cold-starts must be 0 or more")
    if args.tries < 2:
        parser.error("--tries must be at least 2, so that p95 means something")
    if (args.email is None) != (args.password is None):
        parser.error("pass --email and --password together")

    env = dict(os.environ)
    if args.data_dir is not None:
        env["AIM_DATA_DIR"] = str(args.data_dir.resolve())
    settings = load_settings(env)
    runtime = build_runtime(settings)
    email, password = (args.email, args.password) if args.email else bench_user(runtime, args.org, settings.data_dir)
    size = data_size(runtime, args.org)

    if args.url:
        target = Target(args.url.rstrip("/"), args.pid or listener_pid(args.url))
        wait_healthy(target.url, None, timeout_s=10)
    else:
        log_path = settings.data_dir / "dashboard-bench-streamlit.log"
        target = start_dashboard(settings.data_dir, log_path)
        print(f"started the dashboard at {target.url} (pid {target.pid}, log {log_path})")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=find_chromium(playwright, args.chromium),
                                                 args=CHROMIUM_ARGS)
            load_before = os.getloadavg()
            figures = measure(browser, target.url, email, password, args.tries, target.pid, args.path)
            memory = rss_mb(target.pid) if target.pid else None
            target.stop()
            cold = cold_starts(browser, runtime, settings.data_dir, email, password, args.cold_starts)
            load_after = os.getloadavg()
            browser.close()
    finally:
        target.stop()
        runtime.close()

    print(f"dashboard {target.url}, organization {args.org}: {size}")
    print(f"machine: {os.cpu_count()} CPUs ({cpu_model()}), load average {load_before[0]:.2f} before and "
          f"{load_after[0]:.2f} after the measurements")
    for kind in ("new tab", "new browser"):
        loads = figures["paint"][kind]
        samples = [load["useful"] for load in loads]
        report(f"first useful paint, {args.path}, {kind}", samples, TARGETS["first_paint_s"])
        print(f"  samples in run order (ms): {', '.join(f'{value * 1000:.0f}' for value in samples)}")
        report("  of which: HTML document loaded", [load["document"] for load in loads], None)
        headings = [load["heading"] for load in loads if "heading" in load]
        if headings:
            report("  of which: page heading visible", headings, None)
    if cold:
        samples = [load["useful"] for load in cold]
        report("first useful paint, first request of a process", samples, TARGETS["first_paint_s"])
        print(f"  samples in run order (ms): {', '.join(f'{value * 1000:.0f}' for value in samples)}")
    all_headings = [value for samples in figures["headings"].values() for value in samples]
    all_rendered = [value for samples in figures["rendered"].values() for value in samples]
    report("page switch to heading, all pages", all_headings, TARGETS["switch_s"])
    report("page switch to rendered page, all pages", all_rendered, None)
    for key in figures["headings"]:
        report(f"  to {key}: heading", figures["headings"][key], TARGETS["switch_s"])
        report(f"  to {key}: rendered", figures["rendered"][key], None)
    if target.pid:
        print(f"Streamlit CPU time: {figures['paint_cpu_s'] * 1000:.0f} ms per first paint, "
              f"{figures['switch_cpu_s'] * 1000:.0f} ms per page switch")
    if memory is None:
        print("RSS: unknown (pass --pid of the Streamlit process)")
    else:
        verdict = "within target" if memory <= TARGETS["rss_mb"] else f"ABOVE target {TARGETS['rss_mb']:.0f} MB"
        print(f"RSS of the Streamlit process after visiting every page: {memory:,.0f} MB ({verdict})")


if __name__ == "__main__":
    main()
