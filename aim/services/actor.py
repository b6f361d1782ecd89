"""The actor behind an action, as recorded in the audit trail."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

ACTOR_TYPES = ("user", "agent", "api_key", "system")
ROLES = ("admin", "analyst", "manager", "viewer")
# Roles that may change agents, MCP servers and alerts; managers and viewers only read.
WRITE_ROLES = ("admin", "analyst")


@dataclass(frozen=True)
class Actor:
    """The caller of a service: a signed-in user, an agent, an API key, or AIM itself."""

    actor_type: str
    actor_id: str
    role: str = "viewer"
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def label(self) -> str:
        """Short form stored in `*_by` columns, such as `user:3f2a...`."""
        return f"{self.actor_type}:{self.actor_id}"


SYSTEM = Actor("system", "aim", role="admin")


def system(component: str) -> Actor:
    """Return an actor for one of AIM's own jobs, such as `system("trust-recalc")`."""
    return Actor("system", component, role="admin")


@functools.lru_cache(maxsize=4096)
def ip_address_or_none(host: str | None) -> str | None:
    """Return `host` in canonical IP address form, or None when it is not an IP address (a Unix socket peer, a test client).

    Cached, because the API calls it on every request and clients repeat their addresses.
    """
    if host is None:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
