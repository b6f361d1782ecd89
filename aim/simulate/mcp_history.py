"""MCP attestations in the past, with the server state, drift alerts and confidence history they cause.

`mcp_servers.attest` stamps everything with the current time, so the backfill applies its rules
itself. The first attestation of a server without known capabilities sets the baseline. A later
one with a different set is drift: it flags the server and raises a `capability_drift` alert
linked to every connected agent. Each attestation connects the agent to the server, and each is
really signed with the agent's key. Confidence snapshots use `mcp_servers.compute_confidence` on the
latest live attestation of each verified agent, weighted by that agent's trust at the time.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable

import psycopg

from aim import identity
from aim.db.pool import Database
from aim.services import mcp_servers
from aim.services.actor import system
from aim.simulate import profiles, signed_requests
from aim.simulate.alert_book import AlertBook
from aim.simulate.scenario import SimAgent, SimServer

_COPY_SQL = """COPY mcp_attestations (id, organization_id, mcp_server_id, agent_id, capabilities_found, manifest_hash,
                                      latency_ms, healthy, drift, signature, key_id, attested_at, expires_at, expired,
                                      nonce) FROM STDIN"""
_CONNECTIONS_SQL = """
INSERT INTO agent_mcp_connections (organization_id, agent_id, mcp_server_id, first_seen_at, last_seen_at)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (agent_id, mcp_server_id) DO UPDATE SET
    first_seen_at = least(agent_mcp_connections.first_seen_at, EXCLUDED.first_seen_at),
    last_seen_at = greatest(agent_mcp_connections.last_seen_at, EXCLUDED.last_seen_at)
"""
_SERVER_SQL = """
UPDATE mcp_servers SET known_capabilities = %s, manifest_hash = %s, drift_detected = %s, last_drift_at = %s,
                       last_attested_at = greatest(last_attested_at, %s), updated_at = now()
WHERE id = %s
"""
# Attestation timestamps lie this far before storage, as a client's clock and the network would put them.
_SIGNING_DELAY = timedelta(milliseconds=150)


@dataclass(eq=False)
class _ServerState:
    server: SimServer
    known: list[str]
    manifest_hash: str | None
    drift_detected: bool
    last_drift_at: datetime | None
    last_attested_at: datetime | None
    confidence: Decimal
    connected: set[uuid.UUID] = field(default_factory=set)
    changed: bool = False


@dataclass
class McpHistory:
    """The MCP side of one backfill: servers by id, pending rows, and the latest attestation per agent."""

    organization_id: uuid.UUID
    now: datetime
    rng: random.Random
    alerts: AlertBook
    servers: dict[uuid.UUID, _ServerState]
    # (server id, agent id) -> (attested_at, healthy) of the latest attestation.
    latest: dict[tuple[uuid.UUID, uuid.UUID], tuple[datetime, bool]]
    attestations: int = 0
    drifts: int = 0
    _rows: list[tuple] = field(default_factory=list)
    _connections: dict[tuple[uuid.UUID, uuid.UUID], tuple[datetime, datetime]] = field(default_factory=dict)

    @classmethod
    def load(
        cls, db: Database, organization_id: uuid.UUID, servers: list[SimServer], now: datetime, rng: random.Random,
        alerts: AlertBook,
    ) -> "McpHistory":
        by_id = {server.server_id: server for server in servers}
        rows = db.fetch_all(
            "simulate.mcp_state",
            """SELECT id, known_capabilities, manifest_hash, drift_detected, last_drift_at, last_attested_at, confidence
               FROM mcp_servers WHERE organization_id = %s AND id = ANY(%s)""",
            (organization_id, list(by_id)),
        )
        states = {
            row["id"]: _ServerState(
                by_id[row["id"]], sorted(row["known_capabilities"]), row["manifest_hash"], row["drift_detected"],
                row["last_drift_at"], row["last_attested_at"], row["confidence"],
            )
            for row in rows
        }
        for row in db.fetch_all(
            "simulate.mcp_connections",
            "SELECT agent_id, mcp_server_id FROM agent_mcp_connections WHERE organization_id = %s",
            (organization_id,),
        ):
            if row["mcp_server_id"] in states:
                states[row["mcp_server_id"]].connected.add(row["agent_id"])
        latest = {
            (row["mcp_server_id"], row["agent_id"]): (row["attested_at"], row["healthy"])
            for row in db.fetch_all(
                "simulate.mcp_latest_attestations",
                """SELECT DISTINCT ON (mcp_server_id, agent_id) mcp_server_id, agent_id, attested_at, healthy
                   FROM mcp_attestations WHERE organization_id = %s AND NOT expired
                   ORDER BY mcp_server_id, agent_id, attested_at DESC, id DESC""",
                (organization_id,),
            )
        }
        return cls(organization_id, now, rng, alerts, states, latest)

    def attest(self, at: datetime, agent: SimAgent, server: SimServer, *, drifted: bool, healthy: bool,
               verified: bool) -> tuple:
        """Record one attestation at `at` and return its audit row (denied when the agent is not verified)."""
        if not verified:
            return self._audit(at, agent, server, "denied", {
                "agent_id": str(agent.agent_id), "reason": "agent_not_verified",
                "detail": "only verified agents may attest",
            })
        state = self.servers[server.server_id]
        baseline = state.manifest_hash is None and not state.known
        found = sorted(server.tools)
        if drifted and not baseline:
            found = profiles.drifted_tools(server.url, state.known)
        digest = mcp_servers.manifest_hash(found)
        drift = not baseline and found != state.known
        added = sorted(set(found) - set(state.known)) if drift else []
        removed = sorted(set(state.known) - set(found)) if drift else []

        nonce = identity.new_nonce()
        request = signed_requests.attestation_request(
            agent, server, found, healthy=healthy, timestamp=at - _SIGNING_DELAY, nonce=nonce
        )
        attestation_id = uuid.uuid4()
        expires_at = at + mcp_servers.ATTESTATION_LIFETIME
        self._rows.append((
            attestation_id, self.organization_id, server.server_id, agent.agent_id, found, digest, None, healthy,
            drift, identity.decode_base64(request["signature"]), agent.key_id, at, expires_at,
            expires_at <= self.now, nonce,
        ))
        self.attestations += 1
        key = (agent.agent_id, server.server_id)
        first_seen = self._connections.get(key, (at, at))[0]
        self._connections[key] = (first_seen, at)
        state.connected.add(agent.agent_id)
        self.latest[(server.server_id, agent.agent_id)] = (at, healthy)
        state.last_attested_at = at if state.last_attested_at is None else max(state.last_attested_at, at)
        state.changed = True
        if baseline:
            state.known, state.manifest_hash = found, digest
        if drift:
            state.drift_detected, state.last_drift_at = True, at
            self._raise_drift(at, agent, state, attestation_id, found, added, removed, digest)
        return self._audit(at, agent, server, "success", {
            "agent_id": str(agent.agent_id), "attestation_id": str(attestation_id), "manifest_hash": digest,
            "capabilities": len(found), "healthy": healthy, "latency_ms": None, "baseline_set": baseline,
            "drift": drift, "added": added, "removed": removed,
        })

    def _raise_drift(self, at: datetime, reporter: SimAgent, state: _ServerState, attestation_id: uuid.UUID,
                     found: list[str], added: list[str], removed: list[str], digest: str) -> None:
        server = state.server
        self.drifts += 1
        self.alerts.raise_alert(
            at, alert_type=mcp_servers.CAPABILITY_DRIFT_ALERT, severity="high",
            title=f"Capability drift on MCP server {server.name}",
            description=(
                f"agent {reporter.agent_id} reported {len(added)} added and {len(removed)} removed capabilities "
                f"compared with the known set of {len(state.known)}"
            ),
            resource_type="mcp_server", resource_id=str(server.server_id), related=set(state.connected),
            details={
                "added": added, "removed": removed, "known_capabilities": state.known, "capabilities_found": found,
                "manifest_hash": digest, "attestation_id": str(attestation_id), "reported_by": str(reporter.agent_id),
                "url": server.url,
            },
            dedup_key=f"{mcp_servers.CAPABILITY_DRIFT_ALERT}:mcp_server:{server.server_id}:{digest[:16]}",
            raised_by=system("mcp-attestation"),
        )

    def _audit(self, at: datetime, agent: SimAgent, server: SimServer, result: str, details: dict[str, Any]) -> tuple:
        return (self.organization_id, at, "agent", str(agent.agent_id), "mcp_server.attest", "mcp_server",
                str(server.server_id), result, None, None, None, details)

    def flush(self, conn: psycopg.Connection) -> None:
        """Write the pending attestations, connections and server state on `conn`."""
        with conn.cursor() as cursor:
            if self._rows:
                with cursor.copy(_COPY_SQL) as copy:
                    for row in self._rows:
                        copy.write_row(row)
            if self._connections:
                cursor.executemany(_CONNECTIONS_SQL, [
                    (self.organization_id, agent_id, server_id, first, last)
                    for (agent_id, server_id), (first, last) in self._connections.items()
                ])
            changed = [state for state in self.servers.values() if state.changed]
            if changed:
                cursor.executemany(_SERVER_SQL, [
                    (state.known, state.manifest_hash, state.drift_detected, state.last_drift_at,
                     state.last_attested_at, state.server.server_id)
                    for state in changed
                ])
        for state in self.servers.values():
            state.changed = False
        self._rows = []
        self._connections = {}

    def confidence_rows(
        self, as_of: datetime, trust_scores: dict[uuid.UUID, float], is_verified: Callable[[uuid.UUID, datetime], bool]
    ) -> list[tuple]:
        """Return confidence history rows at `as_of` for the servers whose confidence changed."""
        samples: dict[uuid.UUID, list[mcp_servers.ConfidenceSample]] = {}
        for (server_id, agent_id), (attested_at, healthy) in self.latest.items():
            if attested_at > as_of or attested_at + mcp_servers.ATTESTATION_LIFETIME <= as_of:
                continue
            if agent_id not in trust_scores or not is_verified(agent_id, as_of):
                continue
            samples.setdefault(server_id, []).append(
                mcp_servers.ConfidenceSample(trust_scores[agent_id], healthy, attested_at)
            )
        rows = []
        for server_id, state in self.servers.items():
            confidence = mcp_servers.compute_confidence(samples.get(server_id, []), as_of)
            if confidence != state.confidence:
                state.confidence = confidence
                rows.append((self.organization_id, server_id, confidence, "simulated history", as_of))
        return rows
