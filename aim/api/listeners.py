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
keeps `reserve()`'s socket, bound but never listening, so the address stays taken between worker
restarts. Start-up fails at once, with a clear error, when anything listens on the port already:
SO_REUSEPORT alone would let a second server join the first one's group and split its traffic.
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


def _check_free(host: str, port: int) -> None:
    """Raise ValidationError when any socket, SO_REUSEPORT or not, listens on `host`:`port`.

    A socket without SO_REUSEPORT cannot bind next to a listening one. Without this check, a second
    server started on the same port would join the first one's SO_REUSEPORT group and get a share of
    its connections. SO_REUSEADDR lets the probe bind over connections left in TIME_WAIT.

    NOTE: while every worker of a running server restarts at once, nothing listens, so the probe
    passes and a second server could still join.
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


def reserve(host: str, port: int) -> socket.socket:
    """Check that `host`:`port` is free, then bind it in the supervising process without listening.

    Only listening sockets receive connections, so the returned socket gets none. It keeps the port
    from servers started later, whose own check then fails, while workers restart. Close it when the
    server stops.
    """
    _check_free(host, port)
    sock = bind_reuse_port(host, port)
    logger.info("reserved %s:%d for per-worker SO_REUSEPORT listeners", host, port)
    return sock


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
