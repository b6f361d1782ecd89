"""`aim up`: run the whole product on one machine (API, dashboard, and optionally demo traffic).

The parent process resolves the backends once (starting the embedded PostgreSQL and Redis when no
URLs are set), applies migrations, then starts each part as a child process that shares those
backends through the same AIM_* environment. Ctrl-C (SIGINT) or SIGTERM stops every child: first
politely, then with SIGKILL after a timeout.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
APP_PATH = REPO_ROOT / "app.py"
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 60.0


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None

    def start(self, env: dict[str, str]) -> None:
        # Each child gets its own process group so Ctrl-C in the terminal reaches only the parent,
        # which then stops the children in order.
        self.process = subprocess.Popen(self.args, env=env, start_new_session=True)
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0f s; killing it", self.name, STOP_TIMEOUT_S)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass
        logger.info("stopped %s", self.name)


@dataclass
class Supervisor:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)

    def start(self, child: Child) -> Child:
        child.start(self.env)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def watch(self, required: set[str]) -> int:
        """Block until a required child exits; return its exit code."""
        while True:
            for child in self.children:
                if child.name in required and not child.alive():
                    assert child.process is not None
                    code = child.process.returncode
                    logger.error("%s exited with code %s; stopping the rest", child.name, code)
                    return code or 1
            time.sleep(0.5)


def wait_until_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> bool:
    """Poll `url` until it returns HTTP 200 or `timeout_s` passes. Return whether it did."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
    return False


def child_environment(database_url: str, redis_url: str) -> dict[str, str]:
    """Return the parent's environment with the resolved backend URLs, so children share one instance."""
    env = dict(os.environ)
    env["AIM_DATABASE_URL"] = database_url
    env["AIM_REDIS_URL"] = redis_url
    return env


def api_child(host: str, port: int) -> Child:
    return Child("api", [sys.executable, "-m", "aim.cli", "api", "--host", host, "--port", str(port)])


def dashboard_child(host: str, port: int) -> Child:
    return Child(
        "dashboard",
        [
            sys.executable, "-m", "streamlit", "run", str(APP_PATH),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
        ],
    )


DEMO_ORGANIZATION = "demo"
DEMO_PASSWORD = "aim-demo-password"
DEMO_ACCOUNTS = (
    ("admin@demo.aim", "admin"),
    ("analyst@demo.aim", "analyst"),
    ("manager@demo.aim", "manager"),
    ("viewer@demo.aim", "viewer"),
)


def ensure_demo_accounts(runtime) -> list[tuple[str, str]]:
    """Create the demo organization and one account per role; existing accounts are kept as they are.

    NOTE: the demo password is fixed and printed so that a first-time user can sign in. `aim up`
    without --demo creates no accounts, because the first dashboard screen creates the admin.
    """
    from aim.errors import Conflict
    from aim.services import organizations, users
    from aim.services.actor import system

    organization = organizations.get_or_create(runtime.db, DEMO_ORGANIZATION)
    for email, role in DEMO_ACCOUNTS:
        try:
            users.create_user(
                runtime.db, organization["id"], system("aim-up"), email=email, password=DEMO_PASSWORD, role=role,
                display_name=f"Demo {role}",
            )
        except Conflict:
            pass
    return list(DEMO_ACCOUNTS)


def check_ports(host: str, *ports: int) -> None:
    """Raise ValidationError naming the first of `ports` on `host` that a running server listens on."""
    from aim.api.listeners import check_free

    for port in ports:
        check_free(host, port)


def demo_history_exists(runtime) -> bool:
    """Return True when the demo organization has verification events, as after an earlier `aim up --demo`."""
    from aim.services import organizations
    from aim.simulate.backfill import has_history

    return has_history(runtime.db, organizations.get_or_create(runtime.db, DEMO_ORGANIZATION)["id"])


def simulate_args(*extra: str) -> list[str]:
    return [sys.executable, "-m", "aim.cli", "simulate", "--org", DEMO_ORGANIZATION, *extra]
