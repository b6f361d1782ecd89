"""Role access table of the dashboard: the pages each role may open and the roles that may write.

Pure functions with no Streamlit import, so the API, tests and the dashboard share one table.
"""

from __future__ import annotations

from aim.services.actor import ROLES, WRITE_ROLES

# Page keys in navigation order, with their titles. The key is also the page's url_path.
PAGE_TITLES: dict[str, str] = {
    "overview": "Overview",
    "agents": "Agents",
    "mcp_servers": "MCP servers",
    "audit_logs": "Audit logs",
    "alerts": "Alerts",
    "trust": "Trust",
    "performance": "Performance",
    "admin": "Admin",
}

_ROLE_PAGES: dict[str, frozenset[str]] = {
    "admin": frozenset(PAGE_TITLES),
    "analyst": frozenset({"overview", "agents", "mcp_servers", "audit_logs", "alerts", "trust"}),
    "manager": frozenset({"overview", "trust", "agents", "mcp_servers", "alerts"}),
    "viewer": frozenset({"overview", "agents", "mcp_servers", "audit_logs", "alerts", "performance"}),
}


def allowed_pages(role: str) -> list[str]:
    """Return the page keys `role` may open, in navigation order. An unknown role gets none."""
    pages = _ROLE_PAGES.get(role, frozenset())
    return [key for key in PAGE_TITLES if key in pages]


def can_open(role: str, page: str) -> bool:
    """Return True when `role` may open the page with key `page`."""
    return page in _ROLE_PAGES.get(role, frozenset())


def can_write(role: str) -> bool:
    """Return True when `role` may act on agents, MCP servers and alerts (admin and analyst)."""
    return role in WRITE_ROLES


def is_admin(role: str) -> bool:
    """Return True for the only role that manages users, API keys and organization settings."""
    return role == "admin"


assert set(_ROLE_PAGES) == set(ROLES), "every role needs a page set"
