"""Locust users and the staged load shape of the API load test (run it with bench.load.locust_run).

Each user sends the request mix of bench.load.targets at USER_RATE requests per second
(constant_throughput), so 100 users offer 500 requests per second and 200 users offer 1,000. The
shape ramps to 100 users over 2 min, holds 5 min, ramps to 200 over 2 min, holds 5 min and ramps
down over 2 min (16 min). AIM_LOAD_PROFILE=quick runs the same stages scaled to 2 min.

GET /audit-logs follows next_cursor, one cursor per user, and starts again from the first page at
the end. POST /agents/{id}/verify signs each request when it is sent, with the AIM client's signing
code and a fresh nonce and timestamp.

Environment: AIM_LOAD_FIXTURE (path of fixture.json, required) and AIM_LOAD_PROFILE (default or quick).
"""

from __future__ import annotations

import os
import random
import uuid

from locust import FastHttpUser, LoadTestShape, constant_throughput, task

from bench.load import targets
from bench.load.fixtures import LoadFixture
from bench.load.stages import USER_RATE, stages

# Users started or stopped per second: fast enough that the user count follows the ramp each second.
SPAWN_RATE = 50

_fixture: LoadFixture | None = None


def fixture() -> LoadFixture:
    """Return the fixture named by AIM_LOAD_FIXTURE, read once per process."""
    global _fixture
    if _fixture is None:
        path = os.environ.get("AIM_LOAD_FIXTURE")
        if not path:
            raise RuntimeError("AIM_LOAD_FIXTURE is not set; expected the path of a load-test fixture.json")
        _fixture = LoadFixture.read(path)
    return _fixture


def _weight(name: str) -> int:
    return targets.ENDPOINTS_BY_NAME[name].weight


class ApiUser(FastHttpUser):
    """An integration acting as the organization's admin API key, plus its agents' verifications."""

    wait_time = constant_throughput(USER_RATE)

    def on_start(self) -> None:
        self.fixture = fixture()
        self.headers = {"Authorization": f"Bearer {self.fixture.api_key}"}
        self.audit_cursor: str | None = None

    @task(_weight("GET /agents"))
    def list_agents(self) -> None:
        self.client.get("/api/v1/agents", headers=self.headers, name="GET /agents")

    @task(_weight("GET /mcp-servers"))
    def list_mcp_servers(self) -> None:
        self.client.get("/api/v1/mcp-servers", headers=self.headers, name="GET /mcp-servers")

    @task(_weight("GET /dashboard/stats"))
    def dashboard_stats(self) -> None:
        self.client.get("/api/v1/dashboard/stats", headers=self.headers, name="GET /dashboard/stats")

    @task(_weight("GET /audit-logs"))
    def list_audit_logs(self) -> None:
        params = {"limit": 50}
        if self.audit_cursor:
            params["cursor"] = self.audit_cursor
        with self.client.get("/api/v1/audit-logs", params=params, headers=self.headers, name="GET /audit-logs",
                             catch_response=True) as response:
            if response.status_code == 200:
                self.audit_cursor = response.json().get("next_cursor")
            else:
                self.audit_cursor = None
                response.failure(f"status {response.status_code}")

    @task(_weight("POST /agents"))
    def register_agent(self) -> None:
        body = {"name": f"load-{uuid.uuid4().hex}", "agent_type": "load-test", "public_key": self.fixture.public_key,
                "capabilities": ["db:read"]}
        self.client.post("/api/v1/agents", json=body, headers=self.headers, name="POST /agents")

    @task(_weight("POST /mcp-servers"))
    def register_mcp_server(self) -> None:
        unique = uuid.uuid4().hex
        body = {"name": f"load {unique}", "url": f"https://{unique}.load.example.test/mcp"}
        self.client.post("/api/v1/mcp-servers", json=body, headers=self.headers, name="POST /mcp-servers")

    @task(_weight("POST /agents/{id}/verify"))
    def verify(self) -> None:
        agent = random.choice(self.fixture.agents)
        self.client.post(f"/api/v1/agents/{agent.agent_id}/verify", json=agent.signed_request(), headers=self.headers,
                         name="POST /agents/{id}/verify")


class StagedShape(LoadTestShape):
    """Linear ramps and holds from `stages(AIM_LOAD_PROFILE)`; the run stops after the last stage."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = stages(os.environ.get("AIM_LOAD_PROFILE", "default"))

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        previous_users = 0
        for seconds, users in self.stages:
            if elapsed < seconds:
                current = previous_users + (users - previous_users) * elapsed / seconds
                return max(1, round(current)), SPAWN_RATE
            elapsed -= seconds
            previous_users = users
        return None
