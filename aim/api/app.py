"""The FastAPI application: routers under /api/v1, operations endpoints, middleware and lifespan.

Endpoints are plain `def` functions, so FastAPI runs them in its threadpool: the services use
synchronous psycopg and redis-py, and a blocking call must not stall the event loop.

The lifespan builds (or takes) the runtime, starts the process cache, the metric roll-up flusher
and the periodic jobs scheduler, and stops them at shutdown.
"""

from __future__ import annotations

import gc
import inspect
import logging
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import AsyncIterator

import anyio.to_thread
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp

from aim.api import problems
from aim.api.fastpath import CachedReadMiddleware
from aim.api.fastroutes import FastRoutes
from aim.api.middleware import BodyLimitMiddleware, RequestMiddleware, RouteTemplates
from aim.api.query_params import reject_unknown_query_params
from aim.api.ratelimit import RateLimiter, limit_from_env
from aim.api.routes import agents, alerts, api_keys, audit, auth, capabilities, mcp, ops, stats
from aim.runtime import Runtime, make_async_redis

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
API_ROUTERS = (auth, agents, capabilities, mcp, audit, alerts, stats, api_keys)
# AIM records its own metrics (aim.metrics). FastAPI's native OpenTelemetry support (FastAPI 0.165
# and later) is switched off, because with it on FastAPI queries the OpenTelemetry providers, which
# read the environment, on every request.
NATIVE_TELEMETRY_OFF = {"tracing": False, "metrics": False, "logs": False}


def _package_version() -> str:
    try:
        return version("aim")
    except PackageNotFoundError:
        return "0+unknown"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    from aim.cache import get_cache
    from aim.jobs import Scheduler
    from aim.metrics.rollup import RECORDER
    from aim.runtime import get_runtime

    runtime: Runtime | None = app.state.runtime
    if runtime is None:
        # Building the runtime may start embedded servers and run migrations: keep it off the event loop.
        runtime = app.state.runtime = await anyio.to_thread.run_sync(get_runtime)
    # The async client lets async routes count requests on the event loop, without a threadpool hop.
    async_redis = make_async_redis(runtime.redis_url, runtime.settings) if app.state.rate_limit_per_minute else None
    app.state.rate_limiter = RateLimiter(runtime.redis, runtime.settings.redis_prefix, app.state.rate_limit_per_minute,
                                         async_client=async_redis)
    await anyio.to_thread.run_sync(get_cache)
    ops.register_collectors()

    scheduler = None
    if app.state.background_jobs:
        RECORDER.start(runtime.db, runtime.settings.metrics_flush_interval_s)
        scheduler = Scheduler(runtime)
        scheduler.start()
    if app.state.freeze_heap:
        # Objects alive after start-up (modules, routes, schemas, pools) move to the permanent
        # generation, so the full collections that traffic triggers scan only what requests made.
        # A full collection of the start-up heap alone took about 30 ms on the development machine.
        gc.collect()
        gc.freeze()
    logger.info("API started: rate limit %s per minute, background jobs %s",
                app.state.rate_limit_per_minute or "off", "on" if scheduler else "off")
    try:
        yield
    finally:
        if scheduler is not None:
            await anyio.to_thread.run_sync(scheduler.stop)
            await anyio.to_thread.run_sync(RECORDER.stop)
        if async_redis is not None:
            await async_redis.aclose()
        logger.info("API stopped")


class AIMApi(FastAPI):
    """FastAPI with AIM's request layers outside FastAPI's own middleware.

    FastAPI puts middleware added with `add_middleware` inside its ServerErrorMiddleware and two
    more layers of its own, and every layer costs each request a call and each response message a
    `send` wrapper. The fast paths respond to most requests under load, so they run first, and
    only the requests they pass on go through FastAPI's stack. From the outside in: request id and
    metrics, the body limit, the cached-read fast path, the fast routes, then FastAPI.
    """

    route_templates: RouteTemplates

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        return RequestMiddleware(BodyLimitMiddleware(CachedReadMiddleware(FastRoutes(stack))), self.route_templates)


def create_app(
    runtime: Runtime | None = None, *, background_jobs: bool = True, rate_limit_per_minute: int | None = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the API app.

    `runtime` defaults to `aim.runtime.get_runtime()` at startup. `background_jobs=False` leaves the
    metric flusher and the job scheduler off (tests that run several apps in one process).
    `rate_limit_per_minute` defaults to AIM_RATE_LIMIT_PER_MINUTE; 0 turns limiting off.
    `freeze_heap` calls `gc.freeze()` at the end of start-up, for a server process that runs only
    this app (see `aim.api.server.create_server_app`).
    """
    options = {"telemetry": NATIVE_TELEMETRY_OFF} if "telemetry" in inspect.signature(FastAPI).parameters else {}
    app = AIMApi(
        **options,
        title="AIM API",
        version=_package_version(),
        description="Agent Identity Management: agents, signed action verification, trust, MCP servers, "
                    "alerts and audit. Errors are application/problem+json (RFC 9457).",
        lifespan=_lifespan,
    )
    app.state.runtime = runtime
    app.state.background_jobs = background_jobs
    app.state.rate_limit_per_minute = limit_from_env() if rate_limit_per_minute is None else rate_limit_per_minute
    app.state.rate_limiter = None
    app.state.freeze_heap = freeze_heap

    problems.install(app)
    templates: list[tuple[str, set[str] | None]] = [(route.path, getattr(route, "methods", None)) for route in app.routes]
    for module in API_ROUTERS:
        app.include_router(module.router, prefix=API_PREFIX, responses=problems.STANDARD_ERRORS,
                           dependencies=[Depends(reject_unknown_query_params)])
        templates.extend((API_PREFIX + route.path, route.methods) for route in module.router.routes)
    app.include_router(ops.router, responses={500: problems.STANDARD_ERRORS[500]})
    templates.extend((route.path, route.methods) for route in ops.router.routes)

    # Metrics time everything, including requests the body limit rejects, and every response
    # carries the request id, fast path or not (see AIMApi).
    app.route_templates = RouteTemplates(templates)
    return app
