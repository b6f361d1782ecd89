"""Simulator setup: the organization, its MCP servers and agents, and the keys to sign as them.

Setup is idempotent. Agent number i is always called `agent_name(i)`, so a rerun finds the agents
of earlier runs by name and signs with their keys from the key store. An agent whose key is missing
from the store (a deleted store, or a run killed before it saved) gets a new key through
`agents.rotate_key`. A revoked agent without a stored key cannot sign and is left out.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from aim import identity
from aim.errors import Conflict, ValidationError
from aim.runtime import Runtime
from aim.services import agents, organizations
from aim.services.actor import Actor
from aim.simulate import signed_requests
from aim.simulate.keystore import KeyStore, StoredKey
from aim.simulate.profiles import BUILTIN_SERVERS, PROFILES, agent_name, agent_type_for_index, server_tools
from aim.simulate.scenario import SimAgent, SimServer

logger = logging.getLogger(__name__)

SIMULATOR = Actor("system", "simulator", role="admin")
MAX_AGENTS = 100_000
MAX_SERVERS = 1000
# Every 25th agent is suspended and every 25th (offset by half) revoked, so 8 % of agents are
# inactive and their requests are denied as `agent_not_verified`.
INACTIVE_PERIOD = 25
SUSPENDED_OFFSET = 12
REVOKED_OFFSET = 24
# The key store is written after this many new keys, so a killed run loses at most this many.
SAVE_EVERY = 50
SERVERS_PER_AGENT = (1, 3)

ProgressCallback = Callable[[int, int], None]


@dataclass
class Population:
    """The simulated organization: its usable agents (with keys) and MCP servers."""

    organization_id: uuid.UUID
    organization: str
    agents: list[SimAgent]
    servers: list[SimServer]
    keystore_path: Path
    created: int = 0
    reused: int = 0
    rekeyed: int = 0
    skipped: list[str] = field(default_factory=list)

    @property
    def active(self) -> list[SimAgent]:
        return [agent for agent in self.agents if agent.status == "verified"]

    @property
    def inactive(self) -> list[SimAgent]:
        return [agent for agent in self.agents if agent.status in ("suspended", "revoked")]


def target_status(index: int) -> str:
    """Return the status the scenario gives agent `index`: verified, suspended or revoked."""
    position = index % INACTIVE_PERIOD
    if position == SUSPENDED_OFFSET:
        return "suspended"
    if position == REVOKED_OFFSET:
        return "revoked"
    return "verified"


def validate_agent_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_AGENTS:
        raise ValidationError("agents", f"{count!r} is out of range; expected a whole number from 1 to {MAX_AGENTS}")
    return count


def prepare_population(
    runtime: Runtime,
    *,
    organization: str,
    agent_count: int,
    seed: int,
    mcp_registry: Path | None = None,
    registered_at: Callable[[int], datetime | None] | None = None,
    apply_status: bool = True,
    attest_baselines: bool = True,
    progress: ProgressCallback | None = None,
) -> Population:
    """Create or reuse the organization, its MCP servers and `agent_count` agents, and return them.

    `registered_at(i)` places new agent i's registration in the past (backfill). With
    `apply_status`, the agents that the scenario makes inactive are suspended or revoked now
    through the agents service. The backfill passes False, because it dates those changes itself. With
    `attest_baselines`, each server that is in use and has no known capabilities yet gets one
    truthful attestation, because the first attestation defines a server's baseline and a drifted
    first report would make every later truthful one look like drift.
    `mcp_registry` is a registry export file to import servers from; without it a built-in set of
    example servers is registered. `progress(done, total)` is called as agents are set up.
    """
    validate_agent_count(agent_count)
    db = runtime.db
    org = organizations.get_or_create(db, organization)
    organization_id = org["id"]
    servers = _prepare_servers(runtime, organization_id, mcp_registry)

    store = KeyStore.for_organization(runtime.settings.data_dir, organization)
    population = Population(organization_id, organization, [], servers, store.path)
    with store.locked():
        keys = store.load()
        rows = _load_agents(db, organization_id, [agent_name(i) for i in range(agent_count)])
        _drop_stale_keys(db, organization_id, keys)
        unsaved = 0
        usable: list[tuple[int, dict[str, Any]]] = []
        for index in range(agent_count):
            row, changed = _ensure_agent(runtime, organization_id, index, rows, keys, population, registered_at)
            if row is not None:
                usable.append((index, row))
            unsaved += changed
            if unsaved >= SAVE_EVERY:
                store.save(keys)
                unsaved = 0
            if progress is not None:
                progress(index + 1, agent_count)
        if unsaved or not store.path.exists():
            store.save(keys)

    ranked, cumulative = _rank_servers(seed, servers)
    for index, row in usable:
        if apply_status:
            row = _apply_target_status(runtime, organization_id, index, row)
        assigned = _assign_servers(seed, row["name"], ranked, cumulative)
        population.agents.append(_sim_agent(index, row, keys[row["id"]], assigned))
    if attest_baselines:
        _attest_baselines(runtime, organization_id, population)
    logger.info(
        "simulator population of organization %s (%s): %d agents (%d created, %d reused, %d rekeyed), %d MCP servers",
        organization_id, organization, len(population.agents), population.created, population.reused,
        population.rekeyed, len(servers),
    )
    return population


def _load_agents(db, organization_id: uuid.UUID, names: list[str]) -> dict[str, dict[str, Any]]:
    rows = db.fetch_all(
        "simulate.load_agents",
        """SELECT id, name, agent_type, status, key_id, public_key, capabilities, created_at
           FROM agents WHERE organization_id = %s AND name = ANY(%s)""",
        (organization_id, names),
    )
    return {row["name"]: row for row in rows}


def _drop_stale_keys(db, organization_id: uuid.UUID, keys: dict[uuid.UUID, StoredKey]) -> None:
    """Forget stored keys of agents that no longer exist in the organization (for example after a reset)."""
    if not keys:
        return
    present = {
        row["id"]
        for row in db.fetch_all(
            "simulate.present_agents",
            "SELECT id FROM agents WHERE organization_id = %s AND id = ANY(%s)",
            (organization_id, list(keys)),
        )
    }
    for agent_id in [agent_id for agent_id in keys if agent_id not in present]:
        del keys[agent_id]


def _ensure_agent(
    runtime: Runtime, organization_id: uuid.UUID, index: int, rows: dict[str, dict[str, Any]],
    keys: dict[uuid.UUID, StoredKey], population: Population,
    registered_at: Callable[[int], datetime | None] | None,
) -> tuple[dict[str, Any] | None, int]:
    """Make agent `index` usable. Return (its row or None when it cannot sign, number of new keys)."""
    db = runtime.db
    name = agent_name(index)
    row = rows.get(name)
    if row is None:
        profile = PROFILES[agent_type_for_index(index)]
        try:
            registered = agents.register_agent(
                db, organization_id, SIMULATOR, name=name, agent_type=profile.agent_type,
                description=profile.description, capabilities=profile.capabilities,
                metadata={"simulated": True}, created_at=registered_at(index) if registered_at else None,
            )
        except Conflict:
            # Another simulator process registered it a moment ago. Its key is in that process's
            # copy of the store, so this process gives the agent a new key below.
            row = _load_agents(db, organization_id, [name])[name]
        else:
            row = registered.agent
            keys[row["id"]] = StoredKey(row["id"], name, row["agent_type"], row["key_id"], registered.private_key_pem)
            population.created += 1
            return row, 1

    stored = keys.get(row["id"])
    if stored is not None and stored.key_id == row["key_id"]:
        population.reused += 1
        return row, 0
    if row["status"] == "revoked":
        population.skipped.append(name)
        logger.warning("simulated agent %s (%s) is revoked and its key is not stored; leaving it out", row["id"], name)
        return None, 0
    # The old private key is lost, so it needs no grace period.
    rotated = agents.rotate_key(db, organization_id, row["id"], SIMULATOR, grace=timedelta(0))
    row = rotated.agent
    keys[row["id"]] = StoredKey(row["id"], name, row["agent_type"], row["key_id"], rotated.private_key_pem)
    population.rekeyed += 1
    logger.info("simulated agent %s (%s) had no stored key and got a new one, %s", row["id"], name, row["key_id"])
    return row, 1


def _apply_target_status(runtime: Runtime, organization_id: uuid.UUID, index: int, row: dict[str, Any]) -> dict:
    target = target_status(index)
    if target == "verified" or row["status"] == target or row["status"] == "revoked":
        return row
    reason = f"simulated {'suspension' if target == 'suspended' else 'revocation'}"
    try:
        return agents.set_status(runtime.db, organization_id, row["id"], SIMULATOR, target, reason=reason)
    except Conflict as exc:
        logger.warning("simulated agent %s keeps status %s: %s", row["id"], row["status"], exc)
        return row


def _prepare_servers(runtime: Runtime, organization_id: uuid.UUID, mcp_registry: Path | None) -> list[SimServer]:
    from aim.services import mcp_registry as registry
    from aim.services import mcp_servers

    db = runtime.db
    if mcp_registry is not None:
        entries = registry.load_registry_file(mcp_registry)
        report = registry.import_registry(db, organization_id, SIMULATOR, entries)
        logger.info(
            "simulator imported MCP registry %s: %d created, %d updated, %d unchanged, %d skipped",
            mcp_registry, report.created, report.updated, report.unchanged, len(report.skipped),
        )
    else:
        for name, url, description in BUILTIN_SERVERS:
            try:
                mcp_servers.register_server(db, organization_id, SIMULATOR, name=name, url=url, description=description)
            except Conflict:
                pass  # registered by an earlier run
    rows = db.fetch_all(
        "simulate.load_servers",
        """SELECT id, name, url, known_capabilities FROM mcp_servers
           WHERE organization_id = %s AND status = 'active' ORDER BY lower(name), id LIMIT %s""",
        (organization_id, MAX_SERVERS),
    )
    return [
        SimServer(row["id"], row["name"], row["url"], tuple(row["known_capabilities"] or server_tools(row["url"])))
        for row in rows
    ]


def _attest_baselines(runtime: Runtime, organization_id: uuid.UUID, population: Population) -> None:
    from aim.services import mcp_servers

    unset = {
        row["id"]
        for row in runtime.db.fetch_all(
            "simulate.servers_without_baseline",
            """SELECT id FROM mcp_servers WHERE organization_id = %s AND manifest_hash IS NULL
                 AND cardinality(known_capabilities) = 0 AND id = ANY(%s)""",
            (organization_id, [server.server_id for server in population.servers]),
        )
    }
    servers = {server.server_id: server for server in population.servers}
    attested = 0
    for agent in population.active:
        for server_id in agent.servers:
            if server_id not in unset:
                continue
            server = servers[server_id]
            request = signed_requests.attestation_request(
                agent, server, list(server.tools), healthy=True, timestamp=datetime.now(timezone.utc),
                nonce=identity.new_nonce(),
            )
            mcp_servers.attest(
                runtime.db, runtime.redis, runtime.settings.redis_prefix, organization_id, server_id, request
            )
            unset.discard(server_id)
            attested += 1
    if attested:
        logger.info("simulator set the capability baseline of %d MCP servers by attestation", attested)


def _rank_servers(seed: int, servers: list[SimServer]) -> tuple[list[SimServer], list[float]]:
    """Order servers by popularity, fixed by the seed, and return them with cumulative weights.

    The server of rank r gets weight 1 / (r + 1), so a few servers are used by many agents, as
    popular tools are, and their confidence has many attesters.
    """
    ranked = sorted(servers, key=lambda server: hashlib.sha256(f"{seed}:{server.url}".encode()).digest())
    return ranked, list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(ranked))))


def _assign_servers(
    seed: int, name: str, ranked: list[SimServer], cumulative: list[float]
) -> tuple[uuid.UUID, ...]:
    """Pick the 1 to 3 servers an agent uses, the same for a seed and agent name."""
    if not ranked:
        return ()
    rng = random.Random(f"{seed}:{name}")
    count = min(len(ranked), rng.randint(*SERVERS_PER_AGENT))
    chosen: set[uuid.UUID] = set()
    while len(chosen) < count:
        chosen.add(rng.choices(ranked, cum_weights=cumulative)[0].server_id)
    return tuple(sorted(chosen))


def _sim_agent(index: int, row: dict[str, Any], key: StoredKey, servers: tuple[uuid.UUID, ...]) -> SimAgent:
    # The type from the name decides the behaviour when someone changed the stored type.
    agent_type = row["agent_type"] if row["agent_type"] in PROFILES else agent_type_for_index(index)
    return SimAgent(
        agent_id=row["id"],
        name=row["name"],
        agent_type=agent_type,
        status=row["status"],
        key_id=row["key_id"],
        public_key=bytes(row["public_key"]),
        private_key=identity.load_private_key(key.private_key_pem),
        capabilities=tuple(row["capabilities"]),
        created_at=row["created_at"],
        servers=servers,
    )
