"""Prometheus metric objects, with the names that DESIGN.md fixes for dashboards and alerts."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Buckets in seconds, from 0.5 ms to 10 s, for the Prometheus side; the roll-ups keep finer buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "aim_http_requests_total", "HTTP requests served, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "aim_http_request_duration_seconds", "HTTP request latency by route template and method.",
    ["route", "method"], buckets=LATENCY_BUCKETS,
)
DB_QUERIES = Counter("aim_db_queries_total", "Database queries, by query name and outcome.", ["query", "outcome"])
DB_DURATION = Histogram(
    "aim_db_query_duration_seconds", "Database query latency by query name.", ["query"], buckets=LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "aim_cache_requests_total", "Cache lookups, by cache name and result (l1_hit, l2_hit, miss).",
    ["cache", "result"],
)
CACHE_DURATION = Histogram(
    "aim_cache_request_duration_seconds", "Cache lookup latency by cache name and result.",
    ["cache", "result"], buckets=LATENCY_BUCKETS,
)
TRUST_SCORE_CHANGES = Counter(
    "aim_trust_score_changes", "Trust score changes, by direction (up, down).", ["direction"],
)
DB_POOL_CONNECTIONS = Gauge(
    "aim_db_pool_connections", "Database pool connections by pool and state.", ["pool", "state"],
)
