"""Metrics: Prometheus objects plus per-minute roll-ups in PostgreSQL.

Every observation goes to both sides: `prometheus_client` for `/metrics`, and the in-process
`RECORDER`, which flushes mergeable histograms to `metric_rollups` so the dashboard can chart any
time range without a Prometheus server. Only measured values pass through here.
"""

from __future__ import annotations

from aim.metrics import prom
from aim.metrics.rollup import RECORDER


def observe_db_query(name: str, seconds: float, ok: bool) -> None:
    outcome = "ok" if ok else "error"
    prom.DB_QUERIES.labels(query=name, outcome=outcome).inc()
    prom.DB_DURATION.labels(query=name).observe(seconds)
    RECORDER.observe("aim_db_query_duration_seconds", {"query": name, "outcome": outcome}, seconds)


def observe_http(route: str, method: str, status: int, seconds: float) -> None:
    prom.HTTP_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    prom.HTTP_DURATION.labels(route=route, method=method).observe(seconds)
    RECORDER.observe(
        "aim_http_request_duration_seconds", {"route": route, "method": method, "status": str(status)}, seconds
    )


def observe_cache(cache: str, result: str, seconds: float) -> None:
    prom.CACHE_REQUESTS.labels(cache=cache, result=result).inc()
    prom.CACHE_DURATION.labels(cache=cache, result=result).observe(seconds)
    RECORDER.observe("aim_cache_request_duration_seconds", {"cache": cache, "result": result}, seconds)


def observe_trust_change(previous: float | None, current: float) -> None:
    direction = "up" if previous is None or current >= previous else "down"
    prom.TRUST_SCORE_CHANGES.labels(direction=direction).inc()
    RECORDER.count("aim_trust_score_changes", {"direction": direction})
