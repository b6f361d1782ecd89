"""Start the API under test: `aim api --host 127.0.0.1 --port PORT --workers N` on a fixture's database.

The server gets AIM_RATE_LIMIT_PER_MINUTE=0, because the load generator sends every request with one
API key and the per-key limit would otherwise turn most of them into 429 responses. It logs at
WARNING so the log does not cost time per request. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import httpx

from bench.load.fixtures import LoadFixture

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# Idle keep-alive connections stay open this long. In the staged test's ramps, a wrk connection of a
# rare endpoint waits more than uvicorn's default 5 s between sends, and wrk counts a connection
# that the server closed as a read error.
KEEP_ALIVE_S = 75


def check_local_url(url: str) -> None:
    """Exit with an error unless `url` names a loopback host: load is only ever sent to this machine."""
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"error: --url {url} is not on this machine; expected http://127.0.0.1:PORT")


def server_command(port: int, workers: int) -> list[str]:
    """Return the command line of the API server, the same one `aim api` runs."""
    return [sys.executable, "-m", "aim.cli", "api", "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--timeout-keep-alive", str(KEEP_ALIVE_S)]


def describe_server(port: int, workers: int) -> str:
    """Return the command line and environment of the API that `running_api` starts, for reports."""
    command = " ".join(server_command(port, workers)[3:])
    return f"aim {command}, AIM_RATE_LIMIT_PER_MINUTE=0, AIM_LOG_LEVEL=WARNING"


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API server exited with status {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the API server did not become ready at {url} within {START_TIMEOUT_S:.0f} s; see {log_path}")


@dataclass(frozen=True)
class ApiServer:
    """A running API server: its base URL and the pid of its uvicorn supervisor process."""

    url: str
    pid: int | None


@contextmanager
def running_api(fixture: LoadFixture, *, port: int, workers: int, extra_env: dict[str, str] | None = None,
                ) -> Iterator[ApiServer]:
    """Run the API on 127.0.0.1:`port` with `workers` processes for the duration of the block.

    The server's output goes to `api-server.log` in the fixture's work directory.
    """
    env = dict(os.environ)
    env.update(fixture.server_env())
    env.update({"AIM_RATE_LIMIT_PER_MINUTE": "0", "AIM_LOG_LEVEL": "WARNING"})
    env.update(extra_env or {})
    command = server_command(port, workers)
    log_path = fixture.work_dir / "api-server.log"
    url = f"http://{HOST}:{port}"
    with log_path.open("ab") as log:
        # A session of its own, so the stop signal reaches uvicorn's worker processes too.
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    logger.info("started the API server (pid %d): %s", process.pid, " ".join(command))
    try:
        _wait_ready(url, process, log_path)
        yield ApiServer(url, process.pid)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning("the API server (pid %d) did not stop within %.0f s; killing it", process.pid, STOP_TIMEOUT_S)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    logger.info("stopped the API server (pid %d)", process.pid)
