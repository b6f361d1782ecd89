"""The server's app factory: what `aim api` workers build, beyond the app the tests use."""

from __future__ import annotations

import gc
import socket
import subprocess
import time

import pytest
from api_process import api_command, api_env, free_port, start_api, stop_api
from fastapi.testclient import TestClient

from aim.api import create_app, server
from aim.errors import ValidationError

pytestmark = pytest.mark.integration


def test_server_factory_freezes_heap():
    app = server.create_server_app()

    assert app.state.freeze_heap is True
    assert server.APP_FACTORY == "aim.api.server:create_server_app"


def test_startup_freezes_heap_when_asked(runtime):
    plain = create_app(runtime, background_jobs=False, rate_limit_per_minute=0)
    frozen_app = create_app(runtime, background_jobs=False, rate_limit_per_minute=0, freeze_heap=True)
    try:
        with TestClient(plain):
            after_plain = gc.get_freeze_count()
        with TestClient(frozen_app):
            after_frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()

    assert after_plain == 0
    assert after_frozen > 0


def _get_healthz(connection: socket.socket) -> bytes:
    """Send GET /healthz on a kept-alive `connection` and return the response's first line."""
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return connection.recv(65536).split(b"\r\n", 1)[0]


def _closed(connection: socket.socket) -> bool:
    """Return True when the server closed `connection`, False when it is still open after 0.2 s."""
    connection.settimeout(0.2)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False


def test_keep_alive_timeout_applies(settings):
    # uvicorn's default closes an idle connection after 5 s, so a connection idle for 4 s is
    # closed only when the option took effect.
    port = free_port()
    process = start_api(settings, port, "--timeout-keep-alive", "3")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            first = _get_healthz(connection)
            time.sleep(1.0)
            second = _get_healthz(connection)
            time.sleep(4.0)
            closed = _closed(connection)
    finally:
        stop_api(process)

    assert first == b"HTTP/1.1 200 OK"
    assert second == b"HTTP/1.1 200 OK"
    assert closed


@pytest.mark.parametrize("value", [0, 3601, True, 2.5])
def test_keep_alive_timeout_validated(value):
    with pytest.raises(ValidationError) as caught:
        server.serve("127.0.0.1", 8080, 1, timeout_keep_alive=value)

    assert caught.value.field == "timeout-keep-alive"
    assert repr(value) in str(caught.value)
    assert "from 1 to 3600" in str(caught.value)


def test_keep_alive_option_rejects_zero(settings):
    result = subprocess.run(api_command(free_port(), "--timeout-keep-alive", "0"), env=api_env(settings),
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "--timeout-keep-alive" in result.stderr
