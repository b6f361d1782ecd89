"""One listening socket per API worker process, so that the kernel spreads connections over the workers.

In uvicorn's multiprocess mode the parent binds one socket and every worker accepts from it. The
worker that wakes first accepts every connection waiting in the queue. So a burst of new
connections (clients reconnecting after a restart, or a load generator starting) lands on one
worker, and stays there while the connections are kept alive. In the load test's mix, 103 of 105
connections went to one of two workers, which queued requests while the other one idled.

On Linux, SO_REUSEPORT lets each worker bind and listen on a socket of its own at the same address.
The kernel then hashes each new connection's address pair to one of the listening sockets, so the
connections of a burst divide about evenly. Connections waiting in the backlog of a worker that
dies are reset; the supervisor starts a replacement, which binds a new socket.

`WorkerListeners` is what the supervisor passes to every worker it starts or restarts. Pickled into
a worker, it carries only the address, and the worker binds its own socket on first use. The parent
keeps `reserve()`'s sockets for its whole run: a TCP socket, bound but never listening, so the
address stays taken between worker restarts, and a lock named after the address in Linux's abstract
socket namespace. Start-up fails at once, with a clear error, when another AIM API holds that lock
or anything listens on the port already: SO_REUSEPORT alone would let a second server join the
first one's group and split its traffic.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, overload

from aim.errors import ValidationError

logger = logging.getLogger(__name__)


def supported() -> bool:
    """Return True where SO_REUSEPORT balances connections over sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _family(host: str) -> socket.AddressFamily:
    """Return the address family of `host`: a host that contains a colon is IPv6, as in uvicorn."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_reuse_port(host: str, port: int) -> socket.socket:
    """Return a TCP socket bound to `host`:`port` with SO_REUSEPORT set, not yet listening.

    An address in use by a socket without SO_REUSEPORT, or by another user, raises ValidationError
    naming the port.
    """
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValidationError(
            "port", f"{port} on {host} cannot be bound ({exc.strerror or exc}); expected a free TCP port on a local address"
        ) from None
    return sock


def check_free(host: str, port: int) -> None:
    """Raise ValidationError when any socket, SO_REUSEPORT or not, listens on `host`:`port`.

    A socket without SO_REUSEPORT cannot bind next to a listening one. Without this check, a second
    server started on the same port would join the first one's SO_REUSEPORT group and get a share of
    its connections. SO_REUSEADDR lets the probe bind over connections left in TIME_WAIT.

    While every worker of a running AIM API restarts at once, nothing listens and this probe passes.
    The address lock of `reserve()` covers that moment.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ValidationError(
                "port", f"{port} on {host} is in use ({exc.strerror or exc}); stop the server that listens there "
                        "or choose a free TCP port"
            ) from None


class Reservation:
    """The sockets that keep an address for one supervising process; `close()` releases them."""

    def __init__(self, lock: socket.socket, reserved: socket.socket) -> None:
        self.lock = lock
        self.reserved = reserved

    def close(self) -> None:
        self.reserved.close()
        self.lock.close()


def _lock_name(host: str, port: int) -> str:
    """Return the abstract socket name (leading NUL byte) that one AIM API at `host`:`port` holds."""
    return f"\0aim-api:{host}:{port}"


def _claim(host: str, port: int) -> socket.socket:
    """Bind the address lock of `host`:`port`, or raise ValidationError when another process holds it.

    The kernel frees an abstract socket name when its last holder exits, so a crashed server leaves
    no stale lock behind. Like the TCP port, the name belongs to the network namespace.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(_lock_name(host, port))
    except OSError:
        lock.close()
        raise ValidationError(
            "port", f"{port} on {host} is in use by another AIM API process; stop that server or choose a free TCP port"
        ) from None
    return lock


def reserve(host: str, port: int) -> Reservation:
    """Check that `host`:`port` is free, then hold it in the supervising process without listening.

    The address lock rejects a second AIM API even while all of this one's workers restart. The TCP
    socket is bound but never listens, so it receives no connections. It keeps the port bound
    between worker restarts. Close the reservation when the server stops.
    """
    lock = _claim(host, port)
    try:
        check_free(host, port)
        reserved = bind_reuse_port(host, port)
    except BaseException:
        lock.close()
        raise
    logger.info("reserved %s:%d for per-worker SO_REUSEPORT listeners", host, port)
    return Reservation(lock, reserved)


class WorkerListeners(Sequence[socket.socket]):
    """The listening sockets of one worker: a single SO_REUSEPORT socket, bound on first use.

    uvicorn's supervisor hands the same object to every worker it starts. Pickling drops any socket,
    so each worker process binds its own.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._sockets: list[socket.socket] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["host"], state["port"])

    def _bound(self) -> list[socket.socket]:
        if self._sockets is None:
            self._sockets = [bind_reuse_port(self.host, self.port)]
            logger.info("worker %d listens on its own socket at %s:%d", os.getpid(), self.host, self.port)
        return self._sockets

    @overload
    def __getitem__(self, index: int) -> socket.socket: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[socket.socket]: ...

    def __getitem__(self, index):
        return self._bound()[index]

    def __len__(self) -> int:
        return len(self._bound())
