"""The API latency targets that the load tests check, and the request mix that drives them.

The p95 targets are those for the 2-core development machine with the load generator on the same
machine: one fifth of the published targets of 50, 100 and 200 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

# A run fails when more than this share of all requests fail (non-2xx status or socket error).
MAX_ERROR_RATE = 0.01
# GET /api/v1/agents on its own must sustain this many requests per second ...
GET_AGENTS_MIN_RPS = 2000.0
# ... with at most this share of failed requests.
GET_AGENTS_MAX_ERROR_RATE = 0.001
# The open-model runs send this many requests per second in total, spread over the mix below.
TARGET_RATE = 1000.0


@dataclass(frozen=True)
class Endpoint:
    """One endpoint under test: its label, its p95 target and its share of the request mix."""

    name: str
    method: str
    path: str
    p95_ms: float
    weight: int


# Weights in percent of the requests. Reads dominate and verification is the common write. The
# registrations are rare, as in operation, and each one also invalidates the dashboard statistics
# (and an MCP server registration the MCP server list) in every process.
ENDPOINTS = (
    Endpoint("GET /agents", "GET", "/api/v1/agents", 10.0, 32),
    Endpoint("GET /mcp-servers", "GET", "/api/v1/mcp-servers", 10.0, 15),
    Endpoint("GET /dashboard/stats", "GET", "/api/v1/dashboard/stats", 10.0, 15),
    Endpoint("POST /agents", "POST", "/api/v1/agents", 20.0, 2),
    Endpoint("POST /mcp-servers", "POST", "/api/v1/mcp-servers", 20.0, 1),
    Endpoint("GET /audit-logs", "GET", "/api/v1/audit-logs", 20.0, 15),
    Endpoint("POST /agents/{id}/verify", "POST", "/api/v1/agents/{id}/verify", 40.0, 20),
)
ENDPOINTS_BY_NAME = {endpoint.name: endpoint for endpoint in ENDPOINTS}

# Requests per second of the churn phase: each registration drops the cached agent list and
# overview in every process while both are read. It shows how reads fare while their cache reloads.
CHURN_RATES = {"GET /agents": 300.0, "GET /dashboard/stats": 300.0, "POST /agents": 60.0}


def rate_share(endpoint: Endpoint, total_rate: float) -> float:
    """Return the requests per second that `endpoint` gets out of `total_rate`, by its weight."""
    return total_rate * endpoint.weight / sum(item.weight for item in ENDPOINTS)
