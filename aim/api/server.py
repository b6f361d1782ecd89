"""Run the API under uvicorn: `serve(host, port, workers)`, which `aim api` calls."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from aim.api import listeners
from aim.api.app import create_app
from aim.errors import ValidationError

logger = logging.getLogger(__name__)

APP_FACTORY = "aim.api.server:create_server_app"
MAX_WORKERS = 64
MAX_KEEP_ALIVE_S = 3600


def create_server_app() -> FastAPI:
    """Build the app for a uvicorn worker process, which serves nothing else."""
    return create_app(freeze_heap=True)


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int = 1, *, access_log: bool = False,
          timeout_keep_alive: int = 5) -> None:
    """Serve the API on `host`:`port` with `workers` processes until interrupted.

    The runtime is built once here first, so embedded servers start and migrations run before any
    worker does, and a configuration error stops start-up with its message. Each worker then builds
    its own pools, cache and background threads. The per-request access log is off by default
    because `aim_http_requests_total` already counts every request. A keep-alive connection with no
    request for `timeout_keep_alive` seconds is closed, as uvicorn does after 5 s by default.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValidationError("port", f"{port!r} is invalid; expected a TCP port from 1 to 65535")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValidationError("workers", f"{workers!r} is invalid; expected a whole number from 1 to {MAX_WORKERS}")
    if (isinstance(timeout_keep_alive, bool) or not isinstance(timeout_keep_alive, int)
            or not 1 <= timeout_keep_alive <= MAX_KEEP_ALIVE_S):
        raise ValidationError("timeout-keep-alive", f"{timeout_keep_alive!r} is invalid; expected whole seconds "
                                                    f"from 1 to {MAX_KEEP_ALIVE_S}")

    # The port is checked before the runtime starts embedded servers and migrates, so a taken port
    # fails at once with a named error instead of uvicorn's bind error after start-up.
    per_worker_sockets = workers > 1 and listeners.supported()
    reservation = None
    if per_worker_sockets:
        reservation = listeners.reserve(host, port)
    else:
        listeners.check_free(host, port)
    try:
        _run(host, port, workers, per_worker_sockets, access_log=access_log,
             timeout_keep_alive=timeout_keep_alive)
    finally:
        if reservation is not None:
            reservation.close()
    logger.info("the AIM API on http://%s:%d stopped", host, port)


def _run(host: str, port: int, workers: int, per_worker_sockets: bool, *, access_log: bool,
         timeout_keep_alive: int) -> None:
    """Build the runtime once, then serve under uvicorn, with one listening socket per worker when asked."""
    from aim.runtime import get_runtime, set_runtime

    runtime = get_runtime()
    log_level = runtime.settings.log_level.lower()
    if workers > 1:
        # Worker processes build their own runtime; the parent's pools would only hold idle connections.
        runtime.close()
        set_runtime(None)
    if not per_worker_sockets:
        logger.info("serving the AIM API on http://%s:%d with %d worker(s)", host, port, workers)
        uvicorn.run(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                    access_log=access_log, timeout_keep_alive=timeout_keep_alive)
        return

    # Each worker listens on its own SO_REUSEPORT socket, so connections spread over the workers
    # instead of piling up on whichever one accepts first (see aim.api.listeners).
    config = uvicorn.Config(APP_FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level,
                            access_log=access_log, timeout_keep_alive=timeout_keep_alive)
    logger.info("serving the AIM API on http://%s:%d with %d workers, one listening socket each", host, port, workers)
    Multiprocess(config, sockets=listeners.WorkerListeners(host, port)).run()
