"""Metrics: Prometheus objects plus per-minute roll-ups in PostgreSQL.

Every observation goes to both sides: `prometheus_client` for `/metrics`, and the in-process
`RECORDER`, which flushes mergeable histograms to `metric_rollups` so the dashboard can chart any
time range without a Prometheus server. Only measured values pass through here.
"""

from __future__ import annotations

import functools
from typing import Any

from aim.metrics import prom
from aim.metrics.rollup import RECORDER, LabelKey, label_key

SERIES_CACHE_SIZE = 4096


def observe_db_query(name: str, seconds: float, ok: bool) -> None:
    count, duration, key = _db_series(name, "ok" if ok else "error")
    count.inc()
    duration.observe(seconds)
    RECORDER.observe_now("aim_db_query_duration_seconds", key, seconds)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    count, duration, key = _http_series(route, method, status)
    count.inc()
    duration.observe(seconds)
    RECORDER.observe_now("aim_http_request_duration_seconds", key, seconds)


def observe_cache(cache: str, result: str, seconds: float) -> None:
    count, duration, key = _cache_series(cache, result)
    count.inc()
    duration.observe(seconds)
    RECORDER.observe_now("aim_cache_request_duration_seconds", key, seconds)


# The label sets below are few (query names, route templates, statuses, cache names), so each one's
# Prometheus children and roll-up key are looked up once. Looked up per call, they showed in py-spy
# profiles of the API as a cost of their own.
@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _db_series(name: str, outcome: str) -> tuple[Any, Any, LabelKey]:
    return (prom.DB_QUERIES.labels(query=name, outcome=outcome), prom.DB_DURATION.labels(query=name),
            label_key({"query": name, "outcome": outcome}))


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _http_series(route: str, method: str, status: int) -> tuple[Any, Any, LabelKey]:
    return (prom.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)),
            prom.HTTP_DURATION.labels(route=route, method=method),
            label_key({"route": route, "method": method, "status": str(status)}))


@functools.lru_cache(maxsize=SERIES_CACHE_SIZE)
def _cache_series(cache: str, result: str) -> tuple[Any, Any, LabelKey]:
    return (prom.CACHE_REQUESTS.labels(cache=cache, result=result), prom.CACHE_DURATION.labels(cache=cache, result=result),
            label_key({"cache": cache, "result": result}))


def observe_trust_change(previous: float | None, current: float) -> None:
    direction = "up" if previous is None or current >= previous else "down"
    prom.TRUST_SCORE_CHANGES.labels(direction=direction).inc()
    RECORDER.count("aim_trust_score_changes", {"direction": direction})
