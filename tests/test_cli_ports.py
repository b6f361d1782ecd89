"""`aim api` and `aim up` with a port that another server already listens on.

Both check their ports before they start embedded servers or migrate, so a taken port fails at once
with exit status 2 and a message that names it.
"""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from aim import up
from aim.api import server
from aim.cli import app
from aim.errors import ValidationError


@pytest.fixture
def taken_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_one_worker_rejects_taken_port(taken_port):
    with pytest.raises(ValidationError) as caught:
        server.serve("127.0.0.1", taken_port, 1)

    assert caught.value.field == "port"
    assert f"{taken_port} on 127.0.0.1 is in use" in str(caught.value)


@pytest.mark.parametrize("command", [
    ["api", "--host", "127.0.0.1", "--port", "{port}"],
    ["up", "--host", "127.0.0.1", "--api-port", "{port}"],
    ["up", "--host", "127.0.0.1", "--dashboard-port", "{port}"],
])
def test_command_rejects_taken_port(taken_port, command):
    arguments = [part.format(port=taken_port) for part in command]

    result = CliRunner().invoke(app, arguments)

    assert result.exit_code == 2
    assert f"port: {taken_port} on 127.0.0.1 is in use" in result.output
    assert "choose a free TCP port" in result.output


def test_check_ports_passes_free_ports():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert up.check_ports("127.0.0.1", port) is None
