"""Per-worker listening sockets: `aim api --workers N` spreads connections over its workers."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from aim.api import listeners
from aim.errors import ValidationError
from api_process import api_command, api_env, free_port, start_api, stop_api

pytestmark = pytest.mark.skipif(not listeners.supported(), reason="SO_REUSEPORT balancing is Linux only")

CONNECTIONS = 32


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def _socket_owners(pids: list[int]) -> dict[str, int]:
    """Map each socket inode that one of `pids` has open to that pid."""
    owners = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[len("socket:["):-1]] = pid
    return owners


def _tcp_sockets(port: int) -> list[tuple[str, int, str]]:
    """Return (state, remote port, inode) of each IPv4 TCP socket whose local port is `port`."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port:
            rows.append((fields[3], int(fields[2].split(":")[1], 16), fields[9]))
    return rows


def _workers_listening(pid: int, port: int) -> int:
    """Return how many child processes of `pid` hold a listening socket on `port`."""
    listening = {inode for state, _, inode in _tcp_sockets(port) if state == "0A"}
    return sum(1 for child in _children(pid) if listening & set(_socket_owners([child])))


@pytest.fixture()
def two_worker_api(settings):
    port = free_port()
    process = start_api(settings, port, "--workers", "2", ready=lambda started: _workers_listening(started.pid, port) == 2)
    try:
        yield process, port
    finally:
        stop_api(process)


@pytest.mark.integration
def test_workers_have_own_sockets(two_worker_api):
    process, port = two_worker_api
    workers = _children(process.pid)
    owners = _socket_owners(workers)

    listening = [inode for state, _, inode in _tcp_sockets(port) if state == "0A"]

    assert len(listening) == 2
    assert sorted(owners[inode] for inode in listening) == sorted(set(owners[inode] for inode in listening))
    assert {owners[inode] for inode in listening} <= set(workers)


@pytest.mark.integration
def test_connection_burst_spreads(two_worker_api):
    process, port = two_worker_api
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
    try:
        # A response proves that a worker accepted the connection and owns its socket.
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        client_ports = {client.getsockname()[1] for client in clients}
        owners = _socket_owners(_children(process.pid))
        served_by = Counter(owners.get(inode) for state, remote, inode in _tcp_sockets(port)
                            if state == "01" and remote in client_ports)
    finally:
        for client in clients:
            client.close()

    assert sum(served_by.values()) == CONNECTIONS
    assert None not in served_by
    # The kernel hashes each connection to one of the two sockets. Fewer than 4 of 32 on one worker
    # has a probability of about 3e-6 (binomial, p = 0.5).
    assert len(served_by) == 2, served_by
    assert min(served_by.values()) >= 4, served_by


def test_port_in_use_names_the_port():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ValidationError) as caught:
            listeners.reserve("127.0.0.1", port)

    assert caught.value.field == "port"
    assert str(port) in str(caught.value)
    assert "choose a free TCP port" in str(caught.value)


def test_unpickled_listeners_bind_socket():
    port = free_port()
    reservation = listeners.reserve("127.0.0.1", port)
    parent = listeners.WorkerListeners("127.0.0.1", port)
    try:
        copy = pickle.loads(pickle.dumps(parent))
        assert copy._sockets is None

        first = list(copy)
        again = list(copy)

        assert len(first) == 1
        assert first[0] is again[0]
        assert first[0].getsockname() == ("127.0.0.1", port)
        assert first[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        assert parent._sockets is None
        first[0].close()
    finally:
        reservation.close()


def test_port_of_running_server_rejected():
    port = free_port()
    first = listeners.reserve("127.0.0.1", port)
    workers = [listeners.WorkerListeners("127.0.0.1", port) for _ in range(2)]
    sockets = [worker[0] for worker in workers]
    for sock in sockets:
        sock.listen()
    try:
        with pytest.raises(ValidationError) as caught:
            listeners.reserve("127.0.0.1", port)
    finally:
        for sock in sockets:
            sock.close()
        first.close()

    assert caught.value.field == "port"
    assert "is in use" in str(caught.value)


def test_port_held_while_workers_restart():
    # Between worker restarts nothing listens, so only the address lock can reject a second server.
    port = free_port()
    first = listeners.reserve("127.0.0.1", port)
    try:
        with pytest.raises(ValidationError) as caught:
            listeners.reserve("127.0.0.1", port)
    finally:
        first.close()

    assert caught.value.field == "port"
    assert f"{port} on 127.0.0.1 is in use by another AIM API process" in str(caught.value)


def test_closed_reservation_frees_port():
    port = free_port()
    listeners.reserve("127.0.0.1", port).close()

    again = listeners.reserve("127.0.0.1", port)
    again.close()

    assert again.reserved.fileno() == -1
    assert again.lock.fileno() == -1


def test_failed_check_releases_lock():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValidationError):
            listeners.reserve("127.0.0.1", port)

    # The foreign listener is gone; a reservation left locked by the failed attempt would reject this.
    listeners.reserve("127.0.0.1", port).close()


@pytest.mark.integration
def test_second_server_on_same_port_fails(two_worker_api, settings):
    _, port = two_worker_api

    second = subprocess.run(api_command(port, "--workers", "2"), env=api_env(settings), capture_output=True,
                            text=True, timeout=120)

    assert second.returncode == 2, second.stdout + second.stderr
    assert f"port: {port} on 127.0.0.1 is in use" in second.stderr
