"""Cross-cutting API behaviour: problem+json errors, the body limit, rate limits, metrics and probes."""

from __future__ import annotations

import socket
import uuid

import anyio
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from fastapi.testclient import TestClient

from aim.api import create_app, fastroutes
from aim.api.middleware import MAX_BODY_BYTES, BodyLimitMiddleware, BodyTooLarge
from aim.api.ratelimit import RateLimiter, limit_from_env
from aim.errors import ConfigError
from aim.runtime import make_async_redis
from test_api_support import (  # noqa: F401 - client is a fixture
    assert_problem,
    bearer,
    client,
    make_key,
    register_agent,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(db, org_id):
    return bearer(make_key(db, org_id, "admin"))


# --- body limit ---------------------------------------------------------------------------------


def test_body_over_limit_by_content_length(client, admin):
    body = b'{"name": "' + b"x" * (MAX_BODY_BYTES - 11) + b'"}'
    assert len(body) == MAX_BODY_BYTES + 1
    response = client.post("/api/v1/agents", content=body,
                           headers={**admin, "Content-Type": "application/json"})
    problem = assert_problem(response, 413)
    assert "1 MiB" in problem["detail"]


def test_body_over_limit_streamed(client, admin):
    def chunks():
        # No Content-Length: the body arrives chunked and is counted as it streams in.
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536):
            yield b"x" * 65536
        yield b'"}'

    response = client.post("/api/v1/agents", content=chunks(), headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 413)


def test_body_limit_counts_chunks_without_content_length():
    seen: list[int] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(len(message["body"]))
            if not message.get("more_body"):
                return

    chunks = [b"x" * 400_000, b"x" * 400_000, b"x" * 400_000, b""]

    async def receive():
        body = chunks.pop(0)
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    async def send(message):
        raise AssertionError("the middleware must not answer a request without Content-Length itself")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(BodyTooLarge):
        anyio.run(BodyLimitMiddleware(app), scope, receive, send)
    assert seen == [400_000, 400_000]


def test_body_at_limit_is_read(client, admin):
    # Exactly 1 MiB passes the limit and reaches validation, which rejects the too-long name.
    body = b'{"name": "' + b"x" * (MAX_BODY_BYTES - 12) + b'"}'
    assert len(body) == MAX_BODY_BYTES
    response = client.post("/api/v1/agents", content=body, headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 422)


def test_oversized_body_on_bodiless_route_rejected_before_handler(client, admin):
    agent, _ = register_agent(client, admin)
    response = client.post(f"/api/v1/agents/{agent['id']}/suspend", content=b"x" * (MAX_BODY_BYTES + 1),
                           headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 413)
    assert client.get(f"/api/v1/agents/{agent['id']}", headers=admin).json()["status"] == "verified"


# --- problem details ----------------------------------------------------------------------------


def test_unknown_route_and_method_are_problems(client, admin):
    assert_problem(client.get("/api/v1/nothing-here", headers=admin), 404)
    assert_problem(client.put("/api/v1/agents", headers=admin), 405)


def test_malformed_json_is_422(client, admin):
    response = client.post("/api/v1/agents", content=b'{"name": ', headers={**admin, "Content-Type": "application/json"})
    assert_problem(response, 422)


def test_validation_problem_lists_every_field(client, admin):
    body = assert_problem(client.post("/api/v1/agents", json={"name": "", "capabilities": "db:read", "extra": 1},
                                      headers=admin), 422)
    fields = {error["field"] for error in body["errors"]}
    assert {"name", "capabilities", "extra"} <= fields
    assert body["field"] in fields


def test_bad_limit_is_422(client, admin):
    body = assert_problem(client.get("/api/v1/agents", params={"limit": 0}, headers=admin), 422)
    assert body["field"] == "limit"
    assert_problem(client.get("/api/v1/agents", params={"limit": 1001}, headers=admin), 422)


# --- query parameters and validation messages ---------------------------------------------------


def test_unknown_query_parameter_on_agents(client, admin):
    body = assert_problem(client.get("/api/v1/agents", params={"foo": "bar"}, headers=admin), 422)
    assert body["field"] == "foo"
    message = body["errors"][0]["message"]
    assert "is not a parameter of this operation" in message
    assert "status" in message
    assert "name_prefix" in message
    assert body["detail"].startswith("foo: ")


def test_unknown_query_parameter_on_audit_logs(client, admin):
    body = assert_problem(client.get("/api/v1/audit-logs", params={"since": "notadate"}, headers=admin), 422)
    assert body["field"] == "since"
    assert "start" in body["errors"][0]["message"]


def test_every_unknown_query_parameter_listed(client, admin):
    body = assert_problem(client.get("/api/v1/agents", params={"foo": "1", "limit": 5, "bar": "2"},
                                     headers=admin), 422)
    assert [error["field"] for error in body["errors"]] == ["foo", "bar"]


def test_python_name_of_aliased_parameter_rejected(client, admin):
    # The agent list declares status_filter with the alias `status`, and only the alias is a parameter.
    body = assert_problem(client.get("/api/v1/agents", params={"status_filter": "verified"}, headers=admin), 422)
    assert body["field"] == "status_filter"


def test_unknown_query_parameter_without_declared_ones(client, admin):
    agent, _ = register_agent(client, admin)
    body = assert_problem(client.get(f"/api/v1/agents/{agent['id']}", params={"expand": "keys"}, headers=admin), 422)
    assert body["field"] == "expand"
    assert "accepts no query parameters" in body["errors"][0]["message"]


def test_declared_query_parameters_accepted(client, admin):
    register_agent(client, admin)
    response = client.get("/api/v1/agents", params={"status": "verified", "sort": "name", "limit": 5,
                                                   "agent_type": "assistant"}, headers=admin)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert items
    assert {item["status"] for item in items} == {"verified"}

    response = client.get("/api/v1/audit-logs", params={"start": "2026-01-01T00:00:00Z", "limit": 5}, headers=admin)
    assert response.status_code == 200, response.text


def test_malformed_uuid_names_expected_form(client, admin):
    body = assert_problem(client.get("/api/v1/agents/not-a-uuid", headers=admin), 422)
    assert body["field"] == "agent_id"
    message = body["errors"][0]["message"]
    assert "is not a valid UUID" in message
    assert "123e4567-e89b-12d3-a456-426614174000" in message


def test_invalid_json_body_names_body(client, admin):
    response = client.post("/api/v1/agents", content=b'{"name": ', headers={**admin, "Content-Type": "application/json"})
    body = assert_problem(response, 422)
    assert body["field"] == "body"
    message = body["errors"][0]["message"]
    assert "is not valid JSON" in message
    assert "position 9" in message


def test_missing_required_field_is_required(client, admin):
    body = assert_problem(client.post("/api/v1/agents", json={"agent_type": "assistant"}, headers=admin), 422)
    assert body["field"] == "name"
    assert body["errors"][0]["message"] == "is required"


def test_bad_literal_lists_allowed_values(client, admin):
    body = assert_problem(client.get("/api/v1/agents", params={"sort": "size"}, headers=admin), 422)
    assert body["field"] == "sort"
    message = body["errors"][0]["message"]
    assert message.startswith("is not an allowed value; expected ")
    assert "'created'" in message
    assert "'trust'" in message


def test_bad_timestamp_names_expected_form(client, admin):
    body = assert_problem(client.get("/api/v1/audit-logs", params={"start": "yesterday"}, headers=admin), 422)
    assert body["field"] == "start"
    assert "RFC 3339" in body["errors"][0]["message"]


def test_request_id_echoed_and_audited(client, admin):
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    response = client.post("/api/v1/agents", json={"name": f"a-{uuid.uuid4().hex[:6]}"},
                           headers={**admin, "X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    agent_id = response.json()["agent"]["id"]
    audit = client.get("/api/v1/audit-logs", params={"resource_id": agent_id, "action": "agent.register"},
                       headers=admin).json()
    assert audit["items"][0]["request_id"] == request_id
    problem = assert_problem(client.get("/api/v1/agents/not-a-uuid", headers={**admin, "X-Request-ID": request_id}), 422)
    assert problem["request_id"] == request_id


# --- rate limits --------------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after(runtime, db, org_id):
    headers = bearer(make_key(db, org_id, "viewer"))
    limit = 3
    with TestClient(create_app(runtime, background_jobs=False, rate_limit_per_minute=limit)) as limited:
        statuses = []
        for _ in range(3 * limit):
            response = limited.get("/api/v1/dashboard/stats", headers=headers)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
    # A minute boundary may reset the window once, so a 429 comes by request 2 * limit + 1.
    assert statuses[:limit] == [200] * limit
    assert statuses[-1] == 429
    problem = assert_problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "per minute" in problem["detail"]


def test_rate_limit_separate_per_key(runtime, db, org_id):
    first, second = bearer(make_key(db, org_id, "viewer")), bearer(make_key(db, org_id, "viewer"))
    with TestClient(create_app(runtime, background_jobs=False, rate_limit_per_minute=2)) as limited:
        for _ in range(5):
            limited.get("/api/v1/alerts", headers=first)
        assert limited.get("/api/v1/alerts", headers=second).status_code == 200


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rate_limiter_fails_open_without_redis(runtime, caplog):
    dead = redis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=0.2, socket_timeout=0.2,
                       retry=Retry(NoBackoff(), 0))
    prefix = f"{runtime.settings.redis_prefix}failopen-{uuid.uuid4().hex[:6]}:"
    limiter = RateLimiter(dead, prefix, 1)
    assert limiter.hit("api_key:x").allowed
    assert "rate limiting is off" in caplog.text

    # Right after a failure the limiter skips Redis: even a reachable server sees no counter.
    limiter.client = runtime.redis
    assert limiter.hit("api_key:x").allowed
    assert list(runtime.redis.scan_iter(match=f"{prefix}*")) == []


def test_async_hit_shares_sync_counter(runtime):
    prefix = f"{runtime.settings.redis_prefix}async-{uuid.uuid4().hex[:6]}:"

    async def hits() -> list[bool]:
        client = make_async_redis(runtime.redis_url, runtime.settings)
        try:
            limiter = RateLimiter(runtime.redis, prefix, 2, async_client=client)
            first = limiter.hit("api_key:y").allowed
            second = (await limiter.hit_async("api_key:y")).allowed
            third = await limiter.hit_async("api_key:y")
            return [first, second, third.allowed, third.retry_after_s >= 1]
        finally:
            await client.aclose()

    assert anyio.run(hits) == [True, True, False, True]


def test_async_limiter_fails_open(runtime):
    settings = runtime.settings
    prefix = f"{settings.redis_prefix}async-open-{uuid.uuid4().hex[:6]}:"

    async def hits() -> list[bool]:
        dead = make_async_redis(f"redis://127.0.0.1:{_closed_port()}/0", settings)
        live = make_async_redis(runtime.redis_url, settings)
        try:
            limiter = RateLimiter(runtime.redis, prefix, 1, async_client=dead)
            first = (await limiter.hit_async("api_key:z")).allowed
            # Right after a failure the limiter skips Redis, so a reachable server gets no counter.
            limiter.async_client = live
            second = (await limiter.hit_async("api_key:z")).allowed
            return [first, second]
        finally:
            await dead.aclose()
            await live.aclose()

    assert anyio.run(hits) == [True, True]
    assert list(runtime.redis.scan_iter(match=f"{prefix}*")) == []


def test_rate_limit_setting_validated():
    assert limit_from_env({}) == 6000
    assert limit_from_env({"AIM_RATE_LIMIT_PER_MINUTE": "0"}) == 0
    assert limit_from_env({"AIM_RATE_LIMIT_PER_MINUTE": " 120 "}) == 120
    with pytest.raises(ConfigError, match="AIM_RATE_LIMIT_PER_MINUTE"):
        limit_from_env({"AIM_RATE_LIMIT_PER_MINUTE": "fast"})
    with pytest.raises(ConfigError, match="out of range"):
        limit_from_env({"AIM_RATE_LIMIT_PER_MINUTE": "-1"})


# --- metrics and probes -------------------------------------------------------------------------


def test_metrics_by_route_template(client, admin):
    agent, _ = register_agent(client, admin)
    client.get(f"/api/v1/agents/{agent['id']}", headers=admin)
    client.get("/api/v1/no-such-route", headers=admin)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'route="/api/v1/agents/{agent_id}"' in text
    assert agent["id"] not in text
    assert 'route="unmatched"' in text
    assert "aim_db_pool_connections{" in text
    assert "aim_cache_l1_entries{" in text
    assert "aim_cache_requests_total{" in text


def test_metrics_time_rejected_bodies(client, admin):
    client.post("/api/v1/agents", content=b"x" * (MAX_BODY_BYTES + 1), headers=admin)
    text = client.get("/metrics").text
    assert 'aim_http_requests_total{method="POST",route="/api/v1/agents",status="413"}' in text


def test_fast_path_error_is_500_problem(client, admin, monkeypatch, caplog):
    def broken(_query_string):
        raise RuntimeError("fast path bug")

    monkeypatch.setattr(fastroutes, "_audit_query", broken)
    with caplog.at_level("ERROR", logger="aim.api.problems"):
        response = client.get("/api/v1/audit-logs?limit=5", headers={**admin, "X-Request-ID": "req-fast-500"})

    problem = assert_problem(response, 500)
    assert problem["title"] == "Internal error"
    assert response.headers["x-request-id"] == "req-fast-500"
    assert "unhandled error on GET /api/v1/audit-logs" in caplog.text
    text = client.get("/metrics").text
    assert 'aim_http_requests_total{method="GET",route="/api/v1/audit-logs",status="500"}' in text


def test_fast_path_response_timed(client, admin):
    client.get("/api/v1/audit-logs?limit=3", headers=admin)
    before = fastroutes.served("audit")

    response = client.get("/api/v1/audit-logs?limit=3", headers={**admin, "X-Request-ID": "req-fast-ok"})

    assert response.status_code == 200, response.text
    assert fastroutes.served("audit") == before + 1
    assert response.headers["x-request-id"] == "req-fast-ok"
    text = client.get("/metrics").text
    assert 'aim_http_requests_total{method="GET",route="/api/v1/audit-logs",status="200"}' in text


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "postgresql": "ok", "redis": "ok"}
