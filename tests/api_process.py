"""Helpers for tests that run `aim api` as a child process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Callable

import httpx

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api_command(port: int, *options: str) -> list[str]:
    """Return the `aim api` command line for 127.0.0.1:`port`, followed by `options`."""
    return [sys.executable, "-m", "aim.cli", "api", "--host", "127.0.0.1", "--port", str(port), *options]


def api_env(settings) -> dict[str, str]:
    """Return an environment that points `aim api` at the test database and Redis."""
    return dict(os.environ, AIM_DATABASE_URL=settings.database_url, AIM_REDIS_URL=settings.redis_url,
                AIM_REDIS_PREFIX=settings.redis_prefix, AIM_DATA_DIR=str(settings.data_dir), AIM_LOG_LEVEL="WARNING")


def start_api(settings, port: int, *options: str, ready: Callable[[subprocess.Popen], bool] = lambda _: True,
              ) -> subprocess.Popen:
    """Start `aim api` and return it once /healthz returns 200 and `ready(process)` is true.

    Raises AssertionError with the server's output when it exits or is not ready within 60 s.
    """
    process = subprocess.Popen(api_command(port, *options), env=api_env(settings), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200 and ready(process):
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read().decode(errors="replace") if process.poll() is not None else ""
            stop_api(process)
            raise AssertionError(f"aim api {' '.join(options)} failed to start on port {port} within "
                                 f"{START_TIMEOUT_S} s: {output[-2000:]}")
        time.sleep(0.2)


def stop_api(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    process.wait(timeout=30)
