"""The Python client against a real API served by uvicorn on 127.0.0.1, backed by PostgreSQL and Redis."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
import uuid

import anyio
import httpx
import pytest
import uvicorn

from aim import identity
from aim.api import create_app
from aim.client import ActionDenied, AgentKeyStore, AIMClient, APIError, AsyncAIMClient, KeyStoreError
from test_api_support import make_key

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(app, **config) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def _stop(server: uvicorn.Server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def api_url(runtime):
    server, thread, url = _serve(create_app(runtime, background_jobs=False, rate_limit_per_minute=0))
    yield url
    _stop(server, thread)


@pytest.fixture
def api_key(db, org_id):
    return make_key(db, org_id, "analyst")


@pytest.fixture
def client(api_url, api_key, tmp_path):
    with AIMClient(api_url, api_key, data_dir=str(tmp_path), retries=1) as aim_client:
        yield aim_client


def _name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


def test_register_and_verify_round_trip(client):
    agent = client.register_agent(_name(), agent_type="assistant", capabilities=["db:read"])
    result = agent.verify("db:read", "customers/1", context={"ticket": 42})
    assert result.allowed
    assert result.reason == "ok"
    assert result.risk_class == "low"
    assert uuid.UUID(result.verification_id)


def test_private_key_stays_local(client):
    agent = client.register_agent(_name(), capabilities=["db:read"])
    stored = client.key_store.get(agent.id)
    server_view = client.get_agent(agent.id)
    assert server_view["key_origin"] == "supplied"
    local_public = identity.load_private_key(stored.private_key_pem).public_key().public_bytes_raw()
    assert identity.decode_base64(server_view["public_key"]) == local_public
    assert "private" not in str(server_view).lower()


def test_key_store_file_mode(client):
    agent = client.register_agent(_name())
    path = client.key_store.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert str(agent.id) in path.read_text()


def test_key_store_refuses_readable_file(client):
    agent = client.register_agent(_name())
    os.chmod(client.key_store.path, 0o644)
    with pytest.raises(KeyStoreError, match="0644"):
        client.agent(agent.id)


def test_agent_reloaded_from_store(api_url, api_key, tmp_path, client):
    agent = client.register_agent(_name(), capabilities=["files:read"])
    with AIMClient(api_url, api_key, data_dir=str(tmp_path)) as other:
        again = other.agent(agent.id)
        assert again.key_id == agent.key_id
        assert again.verify("files:read", "report.pdf").allowed
    with pytest.raises(KeyStoreError, match="no key"):
        client.agent(uuid.uuid4())


def test_agent_reloaded_by_name(api_url, api_key, tmp_path, client):
    name = _name()
    agent = client.register_agent(name, capabilities=["files:read"])
    with AIMClient(api_url, api_key, data_dir=str(tmp_path)) as other:
        again = other.agent(name)
        assert again.id == agent.id
        assert again.verify("files:read", "report.pdf").allowed
    with pytest.raises(KeyStoreError, match="no agent named 'missing-bot'"):
        client.agent("missing-bot")


def test_key_store_ambiguous_name(tmp_path):
    from aim.client import StoredAgentKey

    store = AgentKeyStore.in_data_dir(tmp_path)
    pem = identity.generate_keypair().private_key_pem()
    for server in ("http://127.0.0.1:8080", "http://127.0.0.1:9090"):
        store.put(StoredAgentKey(uuid.uuid4(), "billing-bot", "k", server, pem))
    with pytest.raises(KeyStoreError, match="2 agents named 'billing-bot'"):
        store.get("billing-bot")


def test_perform_action_allowed(client):
    agent = client.register_agent(_name(), capabilities=["db:read"])
    calls = []

    @agent.perform_action("db:read", resource=lambda table: f"tables/{table}")
    def read_table(table):
        calls.append(table)
        return f"rows of {table}"

    assert read_table("invoices") == "rows of invoices"
    assert calls == ["invoices"]


def test_perform_action_denied(client):
    agent = client.register_agent(_name(), capabilities=["db:read"])
    calls = []

    @agent.perform_action("db:delete", resource="tables/invoices")
    def drop_table():
        calls.append("dropped")

    with pytest.raises(ActionDenied) as denied:
        drop_table()
    assert denied.value.reason == "capability_not_granted"
    assert denied.value.verification_id
    assert calls == []


def test_attest_mcp_by_url_and_id(client):
    agent = client.register_agent(_name())
    url = f"https://{uuid.uuid4().hex[:8]}.example.com/sse"
    server = client.register_mcp_server("tools", url)
    by_url = agent.attest_mcp(url, ["search", "fetch"], latency_ms=12.5, healthy=True)
    assert by_url["server_id"] == server["id"]
    assert by_url["baseline_set"] is True
    by_id = agent.attest_mcp(server["id"], ["search", "fetch", "exec"], latency_ms=9)
    assert by_id["drift"] is True
    assert by_id["added"] == ["exec"]
    with pytest.raises(APIError) as missing:
        agent.attest_mcp("https://unregistered.example.com", ["x"])
    assert missing.value.status == 404


def test_request_capability(client):
    agent = client.register_agent(_name())
    request = agent.request_capability("reports:read", "monthly report")
    assert request["status"] == "pending"
    assert request["capability"] == "reports:read"


def test_api_error_carries_problem(api_url, tmp_path):
    with AIMClient(api_url, "aim_" + "x" * 43, data_dir=str(tmp_path)) as bad:
        with pytest.raises(APIError) as failed:
            bad.list_agents()
    assert failed.value.status == 401
    assert failed.value.reason == "invalid_api_key"


def test_async_client_round_trip(api_url, api_key, tmp_path):
    async def scenario():
        async with AsyncAIMClient(api_url, api_key, data_dir=str(tmp_path)) as aim_client:
            agent = await aim_client.register_agent(_name(), capabilities=["db:read"])
            result = await agent.verify("db:read", "customers/2")

            @agent.perform_action("db:write", resource="customers/2")
            async def write():
                return "written"

            with pytest.raises(ActionDenied) as denied:
                await write()
            reloaded = await aim_client.agent(agent.id)
            return result, denied.value, reloaded

    result, denied, reloaded = anyio.run(scenario)
    assert result.allowed
    assert denied.reason == "capability_not_granted"
    assert reloaded.key_id


def test_key_store_concurrent_writers(tmp_path):
    store = AgentKeyStore.in_data_dir(tmp_path)
    pair = identity.generate_keypair()

    def put(index):
        from aim.client import StoredAgentKey

        store.put(StoredAgentKey(uuid.uuid4(), f"a{index}", f"k{index}", "http://127.0.0.1", pair.private_key_pem()))

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.load()) == 8


# --- retries ------------------------------------------------------------------------------------


class _ScriptedApp:
    """A real ASGI app served by uvicorn that returns scripted statuses and counts the calls."""

    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = 0

    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        self.calls += 1
        status = self.statuses[min(self.calls - 1, len(self.statuses) - 1)]
        body = b'{"items": [], "next_cursor": null, "total": 0, "total_is_estimate": false}'
        if status >= 400:
            body = b'{"type": "about:blank", "title": "scripted", "status": %d, "detail": "scripted"}' % status
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def scripted():
    servers = []

    def start(statuses):
        app = _ScriptedApp(statuses)
        server, thread, url = _serve(app, lifespan="off")
        servers.append((server, thread))
        return app, url

    yield start
    for server, thread in servers:
        _stop(server, thread)


def test_retries_503_then_succeeds(scripted, tmp_path):
    app, url = scripted([503, 503, 200])
    with AIMClient(url, "aim_key", data_dir=str(tmp_path), retries=3) as aim_client:
        assert aim_client.list_agents()["total"] == 0
    assert app.calls == 3


def test_503_exhausted_raises_api_error(scripted, tmp_path):
    app, url = scripted([503])
    with AIMClient(url, "aim_key", data_dir=str(tmp_path), retries=2) as aim_client:
        with pytest.raises(APIError) as failed:
            aim_client.list_agents()
    assert failed.value.status == 503
    assert app.calls == 3


@pytest.mark.parametrize("status", [400, 401, 404, 429])
def test_no_retry_on_4xx(scripted, tmp_path, status):
    app, url = scripted([status, 200])
    with AIMClient(url, "aim_key", data_dir=str(tmp_path), retries=3) as aim_client:
        with pytest.raises(APIError) as failed:
            aim_client.list_agents()
    assert failed.value.status == status
    assert app.calls == 1


def test_connection_error_retried_then_raised(tmp_path, caplog):
    url = f"http://127.0.0.1:{_free_port()}"
    with AIMClient(url, "aim_key", data_dir=str(tmp_path), retries=2, timeout=1.0) as aim_client:
        with pytest.raises(httpx.ConnectError):
            aim_client.list_agents()
    assert caplog.text.count("retrying in") == 2
