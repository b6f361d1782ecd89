"""Operations endpoints outside /api/v1: liveness, readiness and Prometheus metrics (no auth, as probes expect)."""

from __future__ import annotations

import logging
import threading
from typing import Iterator

import redis
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from aim.api import schemas
from aim.api.security import get_runtime
from aim.cache.throttle import RateLimitedWarning
from aim.metrics import prom

logger = logging.getLogger(__name__)
_probe_warning = RateLimitedWarning(logger, interval_s=30.0)

router = APIRouter(tags=["operations"])

# psycopg_pool statistics exported as aim_db_pool_connections{pool, state}.
POOL_STATES = {"pool_size": "open", "pool_available": "idle", "requests_waiting": "waiting", "pool_max": "max"}


class CacheCollector(Collector):
    """Export the process cache's counters at scrape time: L1 entries and per-cache events.

    Registered only by the API app, whose lifespan has built the process cache already.
    """

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from aim.cache import get_cache

        cache = get_cache()
        entries = GaugeMetricFamily("aim_cache_l1_entries", "Live entries in the in-process (L1) cache.", labels=["cache"])
        events = CounterMetricFamily(
            "aim_cache_events", "Cache events since start: compute (cold keys computed here), shared_wait "
                                "(served by another thread's load), stale (served a dropped value while the key reloaded), "
                                "l2_unavailable (Redis calls failed or skipped).",
            labels=["cache", "event"],
        )
        for name, counters in cache.stats().items():
            entries.add_metric([name], counters.get("l1_size", 0))
            for event in ("compute", "shared_wait", "stale", "l2_unavailable"):
                events.add_metric([name, event], counters.get(event, 0))
        yield entries
        yield events


_collector_lock = threading.Lock()
_collector_registered = False


def register_collectors() -> None:
    """Register the cache collector with the default registry once per process."""
    global _collector_registered
    with _collector_lock:
        if not _collector_registered:
            REGISTRY.register(CacheCollector())
            _collector_registered = True


def _update_pool_gauges(request: Request) -> None:
    runtime = get_runtime(request)
    for pool, stats in runtime.db.stats().items():
        for key, state in POOL_STATES.items():
            prom.DB_POOL_CONNECTIONS.labels(pool=pool, state=state).set(stats.get(key, 0))


@router.get("/healthz", response_model=schemas.Health, summary="Liveness")
async def healthz() -> dict[str, str]:
    """200 while the process serves requests; touches no backend."""
    return {"status": "ok"}


@router.get("/readyz", response_model=schemas.Readiness, summary="Readiness",
            responses={503: {"model": schemas.Readiness, "description": "PostgreSQL is unreachable"}})
def readyz(request: Request) -> JSONResponse:
    """Return 200 when PostgreSQL responds. Redis is reported but optional, because every Redis use falls back."""
    runtime = get_runtime(request)
    try:
        runtime.db.fetch_value("readyz.postgresql", "SELECT 1")
        postgresql = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        _probe_warning.warning("readiness probe: PostgreSQL unreachable: %s", exc)
        postgresql = f"unavailable: {type(exc).__name__}"
    try:
        runtime.redis.ping()
        redis_state = "ok"
    except redis.RedisError as exc:
        _probe_warning.warning("readiness probe: Redis unreachable (optional): %s", exc)
        redis_state = f"unavailable: {type(exc).__name__}"
    ready = postgresql == "ok"
    body = {"status": "ready" if ready else "unavailable", "postgresql": postgresql, "redis": redis_state}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    """HTTP, database, cache and trust metrics, plus connection pool and cache gauges, in Prometheus text format."""
    _update_pool_gauges(request)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
