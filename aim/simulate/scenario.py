"""The traffic model shared by live mode and backfill: who acts, what they do, and how they misbehave.

`TrafficPlanner` draws a seeded stream of `PlannedAction`s. A share `bad_share` of them are
misbehaviour, spread over the kinds in `BAD_KIND_WEIGHTS`. The rest are routine actions, plus a
share of MCP attestations that report a server's capabilities truthfully.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence

from aim.errors import ValidationError
from aim.simulate.profiles import PROFILES, AgentProfile

# Kinds of planned actions.
ROUTINE = "routine"                        # a granted action, properly signed
ATTESTATION = "attestation"                # a truthful attestation of an MCP server the agent uses
TAMPERED_SIGNATURE = "tampered_signature"  # the request is changed after signing
REPLAYED_NONCE = "replayed_nonce"          # a request sent again unchanged
STALE_TIMESTAMP = "stale_timestamp"        # signed with a timestamp 10 minutes off
MISSING_CAPABILITY = "missing_capability"  # an action outside the agent's grants
INACTIVE_AGENT = "inactive_agent"          # a request by a suspended or revoked agent
DRIFTED_MCP = "drifted_mcp"                # an attestation reporting a changed capability set

BAD_KIND_WEIGHTS: dict[str, float] = {
    TAMPERED_SIGNATURE: 0.20,
    REPLAYED_NONCE: 0.20,
    STALE_TIMESTAMP: 0.15,
    MISSING_CAPABILITY: 0.20,
    INACTIVE_AGENT: 0.15,
    DRIFTED_MCP: 0.10,
}
# Share of well-behaved actions that are MCP attestations rather than verification requests.
ATTESTATION_SHARE = 0.05
# Share of attestations that report the server unhealthy.
UNHEALTHY_SHARE = 0.03
# Resource numbers run from 1 to this value.
RESOURCE_SPACE = 5000


@dataclass(frozen=True)
class SimAgent:
    """A simulated agent as registered in AIM, with the private key the simulator signs with."""

    agent_id: uuid.UUID
    name: str
    agent_type: str
    status: str
    key_id: str
    public_key: bytes
    private_key: Any = field(repr=False)  # an Ed25519PrivateKey from aim.identity.load_private_key
    capabilities: tuple[str, ...]
    created_at: datetime
    servers: tuple[uuid.UUID, ...] = ()

    @property
    def profile(self) -> AgentProfile:
        return PROFILES[self.agent_type]


@dataclass(frozen=True)
class SimServer:
    """An MCP server of the organization and the tool set it truly exposes."""

    server_id: uuid.UUID
    name: str
    url: str
    tools: tuple[str, ...]


@dataclass(frozen=True)
class PlannedAction:
    """One planned step: a verification request (`action`, `resource`) or an attestation (`server`)."""

    kind: str
    agent: SimAgent
    action: str = ""
    resource: str = ""
    server: SimServer | None = None
    healthy: bool = True

    @property
    def is_attestation(self) -> bool:
        return self.kind in (ATTESTATION, DRIFTED_MCP)


def validate_bad_share(value: float) -> float:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValidationError("bad_share", f"{value!r} is out of range; expected a share from 0 to 1, such as 0.1")
    return float(value)


def draw_activity(agents: Sequence[SimAgent], rng: random.Random) -> dict[uuid.UUID, float]:
    """Draw a log-normal activity weight per agent: a few agents are much busier than the median one."""
    return {agent.agent_id: rng.lognormvariate(0.0, 0.8) for agent in agents}


class TrafficPlanner:
    """A seeded stream of planned actions over a fixed set of agents and servers.

    `active` agents (status verified) perform routine actions and most misbehaviour. `inactive`
    agents (suspended or revoked) appear only in `INACTIVE_AGENT` actions. A bad kind that cannot
    occur, such as drift without servers, is left out and the other bad kinds share its weight.
    Busier and quieter agents come from per-agent `activity` weights, drawn from `rng` when not
    given. Not thread-safe: one thread draws the plan.
    """

    def __init__(
        self, active: Sequence[SimAgent], inactive: Sequence[SimAgent], servers: Sequence[SimServer],
        *, bad_share: float, rng: random.Random, activity: Mapping[uuid.UUID, float] | None = None,
    ) -> None:
        if not active:
            raise ValidationError("agents", "no verified agents to simulate; expected at least one")
        self.bad_share = validate_bad_share(bad_share)
        self.rng = rng
        self.active = list(active)
        self.inactive = list(inactive)
        self.servers = {server.server_id: server for server in servers}
        if activity is None:
            activity = draw_activity(self.active, rng)
        weights = [activity[agent.agent_id] for agent in self.active]
        self._active_cumulative = list(itertools.accumulate(weights))
        available = dict(BAD_KIND_WEIGHTS)
        if not self.inactive:
            available.pop(INACTIVE_AGENT)
        if not self.servers:
            available.pop(DRIFTED_MCP)
        self.bad_kinds = list(available)
        self._bad_cumulative = list(itertools.accumulate(available.values()))
        self._action_tables = {
            name: ([action for action, _ in profile.actions], list(itertools.accumulate(w for _, w in profile.actions)))
            for name, profile in PROFILES.items()
        }

    def next(self) -> PlannedAction:
        """Draw the next planned action."""
        rng = self.rng
        if self.bad_share > 0 and rng.random() < self.bad_share:
            kind = self._pick(self.bad_kinds, self._bad_cumulative)
        elif self.servers and rng.random() < ATTESTATION_SHARE:
            kind = ATTESTATION
        else:
            kind = ROUTINE

        if kind == INACTIVE_AGENT:
            agent = rng.choice(self.inactive)
        else:
            agent = self._pick(self.active, self._active_cumulative)
        if kind in (ATTESTATION, DRIFTED_MCP):
            server = self._server_of(agent)
            if server is None:
                kind = ROUTINE
            else:
                return PlannedAction(kind, agent, server=server, healthy=rng.random() >= UNHEALTHY_SHARE)

        profile = agent.profile
        if kind == MISSING_CAPABILITY:
            action = rng.choice(profile.forbidden)
        else:
            action = self._pick(*self._action_tables[agent.agent_type])
        resource = rng.choice(profile.resources).format(n=rng.randint(1, RESOURCE_SPACE))
        return PlannedAction(kind, agent, action=action, resource=resource)

    def _server_of(self, agent: SimAgent) -> SimServer | None:
        candidates = [self.servers[s] for s in agent.servers if s in self.servers]
        if not candidates:
            return None
        return self.rng.choice(candidates)

    def _pick(self, items: Sequence[Any], cumulative: Sequence[float]) -> Any:
        point = self.rng.random() * cumulative[-1]
        return items[min(bisect.bisect_right(cumulative, point), len(items) - 1)]
