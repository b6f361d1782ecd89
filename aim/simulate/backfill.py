"""Backfill: write days of past activity in bulk, following the same rules as live traffic.

The traffic model is the live one (`scenario.TrafficPlanner`). Each planned verification is decided
by `rules.expected_reason` from the agent's status at that moment, its grants, the action's risk
class and its trust score from the latest daily snapshot, so denials and trust move together. One
request in `SAMPLE_EVERY` is really signed with the agent's key and its signature checked, as a
guard that the rows match what the verifier would decide. Volume goes through COPY: verification
events here, audit rows through `aim.db.audit_ingest.ingest_audit_rows`.

Each action writes one audit row, as in live mode: `agent.verify` for a verification request and
`mcp_server.attest` for an attestation. Alerts, their triage and status changes add a few more.
Every period of the window commits in its own transaction, so an interrupted backfill leaves whole
periods, and a rerun adds more history without touching setup or repeating daily trust snapshots.

Nothing is written into `metric_rollups`, and `verification_events.latency_ms` stays NULL: latency
figures come only from measurements.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql

from aim import identity, trust
from aim.db import partitions
from aim.db.audit_ingest import BULK_STATEMENT_TIMEOUT, ingest_audit_rows
from aim.db.pool import Database
from aim.errors import AIMError, ValidationError
from aim.runtime import Runtime
from aim.services import cache_hooks, mcp_servers, organizations
from aim.services.actor import system
from aim.services.agents import ACTION_NAMES
from aim.services.risk_classes import classify
from aim.services.verification import ALERTING_REASONS
from aim.simulate import rules, signed_requests, timeline, trust_history
from aim.simulate.alert_book import AlertBook
from aim.simulate.mcp_history import McpHistory
from aim.simulate.population import SIMULATOR, Population, target_status
from aim.simulate.scenario import (
    DRIFTED_MCP,
    STALE_TIMESTAMP,
    TAMPERED_SIGNATURE,
    PlannedAction,
    SimAgent,
    TrafficPlanner,
    draw_activity,
    validate_bad_share,
)
from aim.trust.gather import database_now
from aim.trust.inputs import FactorInputs

logger = logging.getLogger(__name__)

# Default volume: 1,000,000 audit rows for 30 days, pro rata for other lengths.
DEFAULT_AUDIT_ROWS_PER_30_DAYS = 1_000_000
MAX_AUDIT_ROWS = 100_000_000
# One verification request in this many is really signed and checked.
SAMPLE_EVERY = 1000
# While a backfill runs, the dashboards' figures of past buckets are refreshed at most this often,
# because each refresh recounts the rows of the whole window.
HISTORY_CHANGE_INTERVAL_S = 30.0
EVENT_COPY_BATCH = 20_000
# Each agent is seen on a given day with a probability drawn from this range, so uptime varies.
PRESENCE_RANGE = (0.6, 1.0)
# Inactive agents change status between these shares of the window.
STATUS_CHANGE_SHARE = (0.3, 0.9)
# Requests reach the server this long after they were signed.
SIGNING_DELAY_MS = (20, 900)

_EVENT_COPY_SQL = """COPY verification_events (id, organization_id, agent_id, action, resource, risk_class, decision,
                                                reason, nonce, key_id, signature_valid, request_timestamp, trust_score,
                                                latency_ms, created_at) FROM STDIN"""
_CONFIDENCE_COPY_SQL = (
    "COPY mcp_confidence_history (organization_id, mcp_server_id, confidence, reason, created_at) FROM STDIN"
)

Progress = Callable[[str, int, int], None]


class SampleMismatch(AIMError):
    """A really signed sample request did not verify the way the backfill rows assume."""


@dataclass
class BackfillReport:
    """Counts and timings of one backfill run."""

    start: datetime
    end: datetime
    actions: int = 0
    verification_events: int = 0
    audit_rows: int = 0
    attestations: int = 0
    alerts_raised: int = 0
    status_changes: int = 0
    trust_history_rows: int = 0
    confidence_history_rows: int = 0
    snapshots_skipped: int = 0
    samples_checked: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    # Parts of `seconds`: drawing and writing the periods, daily trust snapshots, final recalculation.
    write_seconds: float = 0.0
    snapshot_seconds: float = 0.0
    finish_seconds: float = 0.0

    @property
    def audit_rows_per_second(self) -> float:
        return self.audit_rows / self.seconds if self.seconds > 0 else 0.0


def default_audit_rows(days: int) -> int:
    """Return the default backfill volume for `days`: 1,000,000 audit rows per 30 days."""
    return max(1, DEFAULT_AUDIT_ROWS_PER_30_DAYS * days // 30)


def validate_audit_rows(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_AUDIT_ROWS:
        raise ValidationError(
            "audit_rows", f"{count!r} is out of range; expected a whole number from 1 to {MAX_AUDIT_ROWS:,}"
        )
    return count


def agent_index(agent: SimAgent) -> int:
    """Return the number in a simulated agent's name (`sim-00012-coder` -> 12)."""
    return int(agent.name.split("-")[1])


@dataclass
class _StatusChange:
    at: datetime
    status: str
    applied: bool


class Backfill:
    """One backfill run over a prepared population. Use `run_backfill`."""

    def __init__(self, runtime: Runtime, population: Population, *, days: int, audit_rows: int, bad_share: float,
                 seed: int, progress: Progress | None = None) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.population = population
        self.organization_id = population.organization_id
        self.days = timeline.validate_days(days)
        self.total_actions = validate_audit_rows(audit_rows)
        self.bad_share = validate_bad_share(bad_share)
        self.rng = random.Random(f"{seed}:backfill")
        self.progress = progress or (lambda description, done, total: None)
        self.now = database_now(self.db)
        self.start = timeline.window_start(self.now, self.days)
        self.report = BackfillReport(self.start, self.now)
        self.agents = {agent.agent_id: agent for agent in population.agents}
        self.servers = {server.server_id: server for server in population.servers}
        settings = organizations.get(self.db, self.organization_id)["settings"] or {}
        self.risk_overrides = settings.get("risk_classes") or {}
        self._risk_cache: dict[str, str] = {}
        self.changes = self._plan_status_changes()
        self.alerts = AlertBook.load(self.db, self.organization_id, self.now, self.rng)
        self.mcp = McpHistory.load(self.db, self.organization_id, population.servers, self.now, self.rng, self.alerts)
        self.activity = draw_activity(population.agents, self.rng)
        self.presence = {agent_id: self.rng.uniform(*PRESENCE_RANGE) for agent_id in self.agents}
        self.scores: dict[uuid.UUID, float] = {}
        self.previous: dict[uuid.UUID, tuple[Decimal, dict[str, Any]]] = {}
        self.done_snapshots = trust_history.existing_snapshot_times(self.db, self.organization_id, self.start)
        self.new_agent_score = trust.combine(trust.evaluate_factors(FactorInputs(age_seconds=0.0))).score
        self.last_seen: dict[uuid.UUID, datetime] = {}
        self._sample_counter = 0

    # --- status timeline ------------------------------------------------------------------

    def _plan_status_changes(self) -> dict[uuid.UUID, _StatusChange]:
        """Date each inactive agent's status change: found in the audit trail, or planned in the window."""
        changes: dict[uuid.UUID, _StatusChange] = {}
        already = [agent.agent_id for agent in self.population.agents if agent.status in ("suspended", "revoked")]
        recorded = {}
        if already:
            recorded = {
                row["resource_id"]: row["at"]
                for row in self.db.fetch_all(
                    "simulate.status_change_times",
                    """SELECT resource_id, max(occurred_at) AS at FROM audit_logs
                       WHERE organization_id = %s AND resource_type = 'agent' AND resource_id = ANY(%s)
                         AND action IN ('agent.suspend', 'agent.revoke')
                       GROUP BY resource_id""",
                    (self.organization_id, [str(agent_id) for agent_id in already]),
                )
            }
        window = self.now - self.start
        for agent in self.population.agents:
            if agent.status in ("suspended", "revoked"):
                at = recorded.get(str(agent.agent_id), agent.created_at)
                changes[agent.agent_id] = _StatusChange(at, agent.status, applied=True)
                continue
            target = target_status(agent_index(agent))
            if agent.status == "verified" and target != "verified":
                at = self.start + window * self.rng.uniform(*STATUS_CHANGE_SHARE)
                at = max(at, agent.created_at + timedelta(hours=1))
                if at < self.now:
                    changes[agent.agent_id] = _StatusChange(at, target, applied=False)
        return changes

    def status_at(self, agent_id: uuid.UUID, moment: datetime) -> str:
        change = self.changes.get(agent_id)
        if change is None or moment < change.at:
            return "verified"
        return change.status

    def is_verified(self, agent_id: uuid.UUID, moment: datetime) -> bool:
        return self.status_at(agent_id, moment) == "verified"

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> BackfillReport:
        started = time.perf_counter()
        logger.info(
            "simulator backfill of organization %s started: %s to %s, %d actions, bad share %.2f",
            self.organization_id, self.start.isoformat(), self.now.isoformat(), self.total_actions, self.bad_share,
        )
        periods = timeline.periods(self.start, self.now, self.total_actions)
        self._take_snapshot(self.start)
        present: list[SimAgent] = []
        history_changed_at = time.monotonic()
        for period in periods:
            if period.start == timeline.midnight(period.start) or not present:
                present = self._present_on(period.start)
            phase = time.perf_counter()
            self._run_period(period, present)
            self.report.write_seconds += time.perf_counter() - phase
            self.progress("backfill", self.report.actions, self.total_actions)
            if period.ends_day:
                self._take_snapshot(period.end)
            if time.monotonic() - history_changed_at >= HISTORY_CHANGE_INTERVAL_S:
                cache_hooks.history_changed()
                history_changed_at = time.monotonic()
        phase = time.perf_counter()
        self._analyze_audit_partitions()
        self._finish()
        cache_hooks.history_changed()
        self.report.finish_seconds = time.perf_counter() - phase
        self.report.seconds = time.perf_counter() - started
        logger.info(
            "simulator backfill of organization %s finished in %.1f s: %d audit rows (%.0f/s), %d verification "
            "events, %d attestations, %d alerts, %d trust history rows",
            self.organization_id, self.report.seconds, self.report.audit_rows, self.report.audit_rows_per_second,
            self.report.verification_events, self.report.attestations, self.report.alerts_raised,
            self.report.trust_history_rows,
        )
        return self.report

    def _present_on(self, moment: datetime) -> list[SimAgent]:
        return [
            agent for agent in self.population.agents
            if agent.created_at <= moment and self.rng.random() < self.presence[agent.agent_id]
        ]

    def _run_period(self, period: timeline.Period, present: list[SimAgent]) -> None:
        audit_rows: list[tuple] = []
        counts = {"events": 0, "attestations": 0}
        status_updates = self._due_status_changes(period, audit_rows)
        with self.db.transaction() as conn:
            _allow_bulk_statements(self.db, conn)
            self._apply_status_changes(conn, status_updates)
            self._copy_events(conn, self._generate(period, present, audit_rows, counts))
            self.mcp.flush(conn)
            audit_rows.extend(self.alerts.flush(self.db, conn, period.end))
            written = ingest_audit_rows(self.db, audit_rows, conn=conn)
        for agent_id, _ in status_updates:
            cache_hooks.agent_changed(agent_id)
        self.report.actions += counts["events"] + counts["attestations"]
        self.report.verification_events += counts["events"]
        self.report.audit_rows += written
        self.report.attestations = self.mcp.attestations
        self.report.alerts_raised = self.alerts.raised

    def _generate(
        self, period: timeline.Period, present: list[SimAgent], audit_rows: list[tuple], counts: dict[str, int]
    ) -> Iterator[tuple]:
        """Yield the period's verification events; append every action's audit row to `audit_rows`."""
        active = [agent for agent in present if self.is_verified(agent.agent_id, period.start)]
        inactive = [
            agent for agent in self.population.agents
            if agent.created_at <= period.start and not self.is_verified(agent.agent_id, period.start)
        ]
        if not active or not period.actions:
            return
        planner = TrafficPlanner(
            active, inactive, list(self.servers.values()), bad_share=self.bad_share, rng=self.rng,
            activity=self.activity,
        )
        for moment in timeline.action_times(period, self.rng):
            plan = planner.next()
            if plan.is_attestation:
                assert plan.server is not None
                verified = self.is_verified(plan.agent.agent_id, moment)
                audit_rows.append(self.mcp.attest(
                    moment, plan.agent, plan.server, drifted=plan.kind == DRIFTED_MCP, healthy=plan.healthy,
                    verified=verified,
                ))
                if verified:
                    self._seen(plan.agent.agent_id, moment)
                counts["attestations"] += 1
                continue
            event, audit_row = self._verification(moment, plan)
            audit_rows.append(audit_row)
            counts["events"] += 1
            yield event

    def _verification(self, moment: datetime, plan: PlannedAction) -> tuple[tuple, tuple]:
        """Decide one planned request at `moment`; return its verification event and audit row."""
        agent = plan.agent
        action = plan.action
        resource = plan.resource if plan.kind != TAMPERED_SIGNATURE else f"{plan.resource}/export-all"
        risk_class, score, reason = self._decide(moment, plan)
        decision = "allowed" if reason == "ok" else "denied"
        signature_valid = reason not in rules.INVALID_SIGNATURE_REASONS

        if plan.kind == STALE_TIMESTAMP:
            signed_at = moment - signed_requests.STALE_OFFSET
        else:
            signed_at = moment - timedelta(milliseconds=self.rng.randint(*SIGNING_DELAY_MS))
        nonce = identity.new_nonce()
        event_id = uuid.uuid4()
        self._sample_counter += 1
        if self._sample_counter % SAMPLE_EVERY == 1:
            self._check_sample(plan, signed_at, nonce, moment, signature_valid)

        if signature_valid:
            self._seen(agent.agent_id, moment)
        if reason != "ok":
            self.report.denied[reason] = self.report.denied.get(reason, 0) + 1
        if reason in ALERTING_REASONS:
            alert_type, severity, title = ALERTING_REASONS[reason]
            self.alerts.raise_alert(
                moment, alert_type=alert_type, severity=severity, title=f"{title} from agent {agent.name}",
                description=rules.denial_detail(reason, action), resource_type="agent",
                resource_id=str(agent.agent_id), related={agent.agent_id},
                details={"action": action, "verification_id": str(event_id)},
            )

        event = (
            event_id, self.organization_id, agent.agent_id, action, resource, risk_class, decision, reason,
            nonce if reason in rules.NONCE_STORED_REASONS else None, agent.key_id, signature_valid, signed_at,
            Decimal(str(round(score, 4))), None, moment,
        )
        audit_row = (
            self.organization_id, moment, "agent", str(agent.agent_id), "agent.verify", "agent", str(agent.agent_id),
            "success" if decision == "allowed" else "denied", None, None, None,
            {"action": action, "resource": resource, "reason": reason, "risk_class": risk_class,
             "verification_id": str(event_id)},
        )
        return event, audit_row

    def _decide(self, moment: datetime, plan: PlannedAction) -> tuple[str, float, str]:
        """Return (risk class, trust score used, reason) for a planned request at `moment`."""
        agent = plan.agent
        risk_class = self._risk_cache.get(plan.action)
        if risk_class is None:
            risk_class = self._risk_cache[plan.action] = classify(plan.action, self.risk_overrides)
        score = self.scores.get(agent.agent_id, self.new_agent_score)
        reason = rules.expected_reason(
            plan.kind, status=self.status_at(agent.agent_id, moment), capabilities=agent.capabilities,
            action=plan.action, risk_class=risk_class, trust_score=score,
        )
        return risk_class, score, reason

    def _check_sample(self, plan: PlannedAction, signed_at: datetime, nonce: str, moment: datetime,
                      expect_valid: bool) -> None:
        """Sign the planned request for real and check its signature and timestamp as the verifier would."""
        agent = plan.agent
        request = signed_requests.verification_request(
            agent, plan.action, plan.resource, timestamp=signed_at, nonce=nonce
        )
        if plan.kind == TAMPERED_SIGNATURE:
            request = signed_requests.tampered(request)
        signature = identity.decode_signature(request["signature"])
        valid = signature is not None and identity.verify_signature(
            agent.public_key, identity.canonical_request(request), signature
        )
        if valid != expect_valid:
            raise SampleMismatch(
                f"sampled {plan.kind} request of agent {agent.agent_id}: signature valid={valid}, "
                f"expected valid={expect_valid}; the backfill rules disagree with the verifier"
            )
        stale = abs(moment - signed_at) > timedelta(seconds=300)
        if valid and stale != (plan.kind == STALE_TIMESTAMP):
            raise SampleMismatch(f"sampled {plan.kind} request of agent {agent.agent_id}: stale={stale}")
        self.report.samples_checked += 1

    def _seen(self, agent_id: uuid.UUID, moment: datetime) -> None:
        if moment > self.last_seen.get(agent_id, moment - timedelta(seconds=1)):
            self.last_seen[agent_id] = moment

    # --- status changes ---------------------------------------------------------------------

    def _due_status_changes(
        self, period: timeline.Period, audit_rows: list[tuple]
    ) -> list[tuple[uuid.UUID, _StatusChange]]:
        due = []
        for agent_id, change in self.changes.items():
            if change.applied or change.at >= period.end:
                continue
            change.applied = True
            due.append((agent_id, change))
            reason = f"simulated {'suspension' if change.status == 'suspended' else 'revocation'}"
            audit_rows.append((
                self.organization_id, change.at, SIMULATOR.actor_type, SIMULATOR.actor_id, ACTION_NAMES[change.status],
                "agent", str(agent_id), "success", None, None, None,
                {"from": "verified", "to": change.status, "reason": reason},
            ))
        return due

    def _apply_status_changes(self, conn: psycopg.Connection, due: list[tuple[uuid.UUID, _StatusChange]]) -> None:
        for agent_id, change in due:
            # Same move as agents.set_status, dated at the change: only a verified agent changes here.
            self.db.execute(
                "simulate.set_status",
                """UPDATE agents SET status = %s, updated_at = %s
                   WHERE organization_id = %s AND id = %s AND status = 'verified'""",
                (change.status, change.at, self.organization_id, agent_id),
                conn=conn,
            )
            self.report.status_changes += 1

    # --- bulk writes and snapshots ----------------------------------------------------------

    def _copy_events(self, conn: psycopg.Connection, events: Iterator[tuple]) -> None:
        # Rows are written as they are drawn, and psycopg sends each full buffer at once, so
        # PostgreSQL stores rows while Python draws the next ones. Batches keep each COPY statement
        # well inside statement_timeout.
        pending = next(events, None)
        while pending is not None:
            with conn.cursor() as cursor, cursor.copy(_EVENT_COPY_SQL) as copy:
                for _ in range(EVENT_COPY_BATCH):
                    copy.write_row(pending)
                    pending = next(events, None)
                    if pending is None:
                        break

    def _take_snapshot(self, as_of: datetime) -> None:
        """Score every agent as of `as_of`; store history and confidence rows unless a rerun already did."""
        phase = time.perf_counter()
        try:
            self._store_snapshot(as_of)
        finally:
            self.report.snapshot_seconds += time.perf_counter() - phase

    def _store_snapshot(self, as_of: datetime) -> None:
        results = trust_history.snapshot(self.db, self.organization_id, set(self.agents), as_of)
        self.scores.update({agent_id: result.score for agent_id, result in results.items()})
        if as_of in self.done_snapshots:
            self.report.snapshots_skipped += 1
            for agent_id, result in results.items():
                self.previous[agent_id] = (Decimal(str(result.score)), result.factors_json())
            return
        rows = trust_history.history_rows(self.organization_id, results, self.previous, as_of)
        confidence_rows = self.mcp.confidence_rows(as_of, self.scores, self.is_verified)
        with self.db.transaction() as conn:
            _allow_bulk_statements(self.db, conn)
            trust_history.write_history(conn, rows)
            if confidence_rows:
                with conn.cursor() as cursor, cursor.copy(_CONFIDENCE_COPY_SQL) as copy:
                    for row in confidence_rows:
                        copy.write_row(row)
        self.report.trust_history_rows += len(rows)
        self.report.confidence_history_rows += len(confidence_rows)

    def _analyze_audit_partitions(self) -> None:
        """Refresh planner statistics of the audit partitions the window wrote to.

        Autovacuum analyzes a partition only after it notices the new rows, and a backfill adds
        about a million rows in a few minutes, so the audit page's plans would meanwhile use row
        counts from before it.
        """
        first = self.start.astimezone(timezone.utc)
        month = datetime(first.year, first.month, 1, tzinfo=timezone.utc)
        while month <= self.now:
            name = partitions.month_partition_name(month)
            if self.db.fetch_value("simulate.partition_exists", "SELECT to_regclass(%s) IS NOT NULL", (name,)):
                self.db.execute("simulate.analyze_audit", sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
                logger.info("analyzed audit partition %s after the backfill", name)
            month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=timezone.utc)

    def _finish(self) -> None:
        """Store last-seen times, then recompute confidence and trust now, so current values follow from the data."""
        if self.last_seen:
            self.db.execute(
                "simulate.last_seen",
                """UPDATE agents a SET last_seen_at = greatest(coalesce(a.last_seen_at, '-infinity'), t.seen)
                   FROM unnest(%s::uuid[], %s::timestamptz[]) AS t(id, seen)
                   WHERE a.id = t.id AND a.organization_id = %s""",
                (list(self.last_seen), list(self.last_seen.values()), self.organization_id),
            )
        self.progress("current confidence", 0, len(self.servers))
        for done, server_id in enumerate(self.servers, start=1):
            mcp_servers.recompute_confidence(self.db, self.organization_id, server_id, reason="simulator backfill")
            self.progress("current confidence", done, len(self.servers))
        self.progress("trust recalculation", 0, 1)
        trust.recalculate_organization(
            self.db, self.organization_id, reason="simulated history backfilled", actor=system("simulator").label
        )
        self.progress("trust recalculation", 1, 1)


def _allow_bulk_statements(db: Database, conn: psycopg.Connection) -> None:
    """Give the statements of one bulk transaction BULK_STATEMENT_TIMEOUT instead of the pool's 5 s.

    A period's COPY batches take well under a second on an idle machine, but a loaded one can
    stretch them past 5 s, and an aborted period would stop the whole backfill.
    """
    partitions.set_local(db, conn, "statement_timeout", BULK_STATEMENT_TIMEOUT)


def has_history(db: Database, organization_id: uuid.UUID) -> bool:
    """Return True when the organization has any verification event, which every backfill writes."""
    return bool(db.fetch_value(
        "simulate.has_history", "SELECT EXISTS (SELECT 1 FROM verification_events WHERE organization_id = %s)",
        (organization_id,),
    ))


def run_backfill(
    runtime: Runtime, population: Population, *, days: int, audit_rows: int | None = None, bad_share: float = 0.1,
    seed: int = 0, progress: Progress | None = None,
) -> BackfillReport:
    """Write `days` days of history for `population` and return what was written.

    `audit_rows` is the number of actions, each of which writes one audit row (default
    `default_audit_rows(days)`). Prepare the population with `registered_at` from
    `timeline.registration_times` and `apply_status=False`, so agents are dated into the past and
    their suspensions and revocations happen inside the window. Agents registered earlier (by a
    live run) keep their registration time, so their history starts there. `progress(description,
    done, total)` is called after each period and each final step.
    """
    days = timeline.validate_days(days)
    backfill = Backfill(
        runtime, population, days=days, audit_rows=audit_rows if audit_rows is not None else default_audit_rows(days),
        bad_share=bad_share, seed=seed, progress=progress,
    )
    return backfill.run()
