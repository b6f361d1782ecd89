"""The server's app factory: what `aim api` workers build, beyond the app the tests use."""

from __future__ import annotations

import gc
import http.client
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


def _get_healthz(connection: http.client.HTTPConnection) -> int:
    """Send GET /healthz on a kept-alive `connection`, read the whole response and return its status."""
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def _closed_within(connection: http.client.HTTPConnection, seconds: float) -> bool:
    """Return True when the server closes `connection` within `seconds`, False when it is still open."""
    connection.sock.settimeout(seconds)
    try:
        return connection.sock.recv(1) == b""
    except TimeoutError:
        return False


def test_keep_alive_timeout_applies(settings):
    # With the option at 1 s the server closes the idle connection about 1 s after the response.
    # The check ends 4 s after it, before uvicorn's default of 5 s would close it, and leaves 3 s
    # for a slow event loop on a loaded machine.
    port = free_port()
    process = start_api(settings, port, "--timeout-keep-alive", "1")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        first = _get_healthz(connection)
        time.sleep(0.2)
        second = _get_healthz(connection)
        closed = _closed_within(connection, 4.0)
    finally:
        connection.close()
        stop_api(process)

    assert first == 200
    assert second == 200
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
