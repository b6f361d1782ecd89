"""Simulated agent types: the capabilities each type is granted and the actions it performs.

Action names follow the default risk rules in `aim.services.risk_classes`, so every type performs a
mix of low-risk reads, medium-risk writes and a few high- or critical-risk actions. Every
`forbidden` action falls outside the type's grants, so trying it is a capability violation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class AgentProfile:
    """The grants and behaviour of one agent type.

    `actions` are (action, weight) pairs, each covered by `capabilities`. `resources` are templates
    whose `{n}` is replaced by a number. `forbidden` actions are not covered by `capabilities`.
    """

    agent_type: str
    description: str
    capabilities: tuple[str, ...]
    actions: tuple[tuple[str, float], ...]
    resources: tuple[str, ...]
    forbidden: tuple[str, ...]


PROFILES: dict[str, AgentProfile] = {
    profile.agent_type: profile
    for profile in (
        AgentProfile(
            "assistant", "Answers staff questions from documents and calendars",
            ("docs:read", "docs:search", "calendar:read", "calendar:update", "email:send"),
            (("docs:read", 0.40), ("docs:search", 0.30), ("calendar:read", 0.15), ("calendar:update", 0.10),
             ("email:send", 0.05)),
            ("docs/{n}", "calendar/team-{n}", "mailbox/user-{n}"),
            ("secrets:read", "payments:execute", "db:delete", "repo:write"),
        ),
        AgentProfile(
            "support", "Triages and answers customer tickets",
            ("tickets:*", "customers:read", "email:send"),
            (("tickets:read", 0.35), ("tickets:update", 0.25), ("tickets:create", 0.10), ("customers:read", 0.25),
             ("email:send", 0.05)),
            ("tickets/{n}", "customers/{n}"),
            ("customers:delete", "payments:execute", "db:write", "iam:admin"),
        ),
        AgentProfile(
            "coder", "Writes code, runs CI and deploys services",
            ("repo:read", "repo:write", "ci:execute", "app:deploy"),
            (("repo:read", 0.40), ("repo:write", 0.30), ("ci:execute", 0.20), ("app:deploy", 0.10)),
            ("repos/service-{n}", "pipelines/{n}", "apps/service-{n}"),
            ("secrets:read", "db:delete", "payments:execute", "iam:admin"),
        ),
        AgentProfile(
            "etl", "Moves data between the warehouse and object storage",
            ("db:read", "db:write", "storage:*", "pipelines:execute"),
            (("db:read", 0.35), ("db:write", 0.25), ("storage:read", 0.20), ("storage:write", 0.10),
             ("pipelines:execute", 0.10)),
            ("tables/events_{n}", "buckets/raw-{n}", "pipelines/{n}"),
            ("db:delete", "secrets:read", "iam:admin"),
        ),
        AgentProfile(
            "analytics", "Builds reports from the warehouse",
            ("warehouse:read", "warehouse:search", "reports:create"),
            (("warehouse:read", 0.50), ("warehouse:search", 0.30), ("reports:create", 0.20)),
            ("warehouse/table-{n}", "reports/{n}"),
            ("warehouse:delete", "secrets:read", "db:write"),
        ),
        AgentProfile(
            "security", "Reviews logs and alerts and manages access",
            ("logs:read", "logs:search", "alerts:*", "secrets:read", "iam:admin"),
            (("logs:read", 0.30), ("logs:search", 0.30), ("alerts:update", 0.20), ("secrets:read", 0.10),
             ("iam:admin", 0.10)),
            ("logs/host-{n}", "alerts/{n}", "vault/secret-{n}", "iam/role-{n}"),
            ("payments:execute", "db:delete", "repo:write"),
        ),
        AgentProfile(
            "finance", "Reconciles the ledger and pays invoices",
            ("ledger:read", "invoices:*", "payments:execute", "reports:create"),
            (("ledger:read", 0.35), ("invoices:read", 0.20), ("invoices:create", 0.20), ("reports:create", 0.15),
             ("payments:execute", 0.10)),
            ("ledger/{n}", "invoices/{n}", "payments/{n}"),
            ("iam:admin", "secrets:read", "db:delete"),
        ),
    )
}

# Share of each type among the simulated agents (sums to 1).
TYPE_MIX: tuple[tuple[str, float], ...] = (
    ("assistant", 0.25), ("support", 0.20), ("coder", 0.15), ("etl", 0.15), ("analytics", 0.10),
    ("security", 0.05), ("finance", 0.10),
)

# 1 / golden ratio: multiples of it modulo 1 spread evenly over [0, 1) in any prefix.
_GOLDEN_FRACTION = 0.6180339887498949


def agent_type_for_index(index: int) -> str:
    """Return the agent type of the simulated agent with number `index`, the same in every run.

    Any first N indices hold each type in close to its `TYPE_MIX` share, because the positions
    index * 0.618... modulo 1 form a low-discrepancy sequence.
    """
    position = (index * _GOLDEN_FRACTION) % 1.0
    cumulative = 0.0
    for agent_type, share in TYPE_MIX:
        cumulative += share
        if position < cumulative:
            return agent_type
    return TYPE_MIX[-1][0]


def agent_name(index: int) -> str:
    """Return the name of simulated agent `index`, such as `sim-00007-coder`; names sort by index."""
    return f"sim-{index:05d}-{agent_type_for_index(index)}"


# Tool names that simulated MCP servers expose. They are MCP tool names, not AIM capabilities.
MCP_TOOLS = (
    "read_file", "write_file", "list_directory", "search_code", "search_issues", "create_issue",
    "list_pull_requests", "query_database", "list_tables", "send_message", "fetch_url", "get_calendar",
    "create_event", "search_docs", "get_weather", "run_query", "list_buckets", "get_object",
)
# Tools a compromised or silently updated server might start to expose.
DRIFT_TOOLS = ("execute_shell", "read_credentials", "delete_repository", "export_all_records")


def server_tools(url: str) -> list[str]:
    """Return the tool set a simulated MCP server at `url` exposes: 3 to 8 tools fixed by the URL."""
    digest = hashlib.sha256(url.encode()).digest()
    count = 3 + digest[0] % 6
    chosen = {MCP_TOOLS[digest[1 + i] % len(MCP_TOOLS)] for i in range(count)}
    return sorted(chosen)


def drifted_tools(url: str, known: list[str]) -> list[str]:
    """Return a drifted tool set for the server at `url`: `known` plus one tool fixed by the URL.

    The same server always drifts the same way, so repeated drift reports of one server count
    against one alert, as a real compromised server would.
    """
    digest = hashlib.sha256(b"drift:" + url.encode()).digest()
    extra = DRIFT_TOOLS[digest[0] % len(DRIFT_TOOLS)]
    return sorted(set(known) | {extra})


# Servers registered when no registry file is given. The example.com domain is reserved for
# documentation (RFC 2606), and the simulator never connects to these URLs.
BUILTIN_SERVERS: tuple[tuple[str, str, str], ...] = (
    ("GitHub", "https://mcp.example.com/github", "Repositories, issues and pull requests"),
    ("Filesystem", "https://mcp.example.com/filesystem", "Read and write files in a sandbox"),
    ("PostgreSQL", "https://mcp.example.com/postgres", "Read-only SQL over the warehouse"),
    ("Slack", "https://mcp.example.com/slack", "Channels and messages"),
    ("Google Calendar", "https://mcp.example.com/calendar", "Calendars and events"),
    ("Web fetch", "https://mcp.example.com/fetch", "Fetch and convert web pages"),
    ("Object storage", "https://mcp.example.com/s3", "Buckets and objects"),
    ("Docs search", "https://mcp.example.com/docs", "Search internal documentation"),
    ("Jira", "https://mcp.example.com/jira", "Tickets and projects"),
    ("Sentry", "https://mcp.example.com/sentry", "Errors and releases"),
    ("Linear", "https://mcp.example.com/linear", "Issues and cycles"),
    ("Notion", "https://mcp.example.com/notion", "Pages and databases"),
)
