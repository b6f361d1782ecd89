"""Recalculate stored trust scores: one agent on an event, or whole organizations periodically.

A recalculation writes `agents.trust_score`, `agents.trust_factors` and one `trust_score_history`
row in one transaction, and only when the rounded score or the provenance of some factor changed.
A change of a factor's value alone, with the same rounded score, writes nothing, so the periodic
job does not fill the history with no-op rows.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Sequence

import psycopg
from psycopg.types.json import Jsonb

from aim import metrics
from aim.db.pool import Database
from aim.errors import AIMError, NotFound, ValidationError
from aim.trust import gather
from aim.trust.gather import AgentSnapshot
from aim.trust.inputs import FactorInputs, evaluate_factors
from aim.trust.score import TrustScore, combine

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000
MAX_LABEL_LENGTH = 500

# The update is a compare-and-set on the state read at the start of the batch. A single-agent
# recalculation that committed in between is newer, so the batch skips that agent instead of
# overwriting it. Rows are locked in id order with SKIP LOCKED, so a batch never waits on, or
# deadlocks with, a transaction that holds an agent row, and skips that agent as well.
# History rows are written for exactly the rows the UPDATE changed.
_WRITE_SQL = """
WITH input AS (
    SELECT t.agent_id, t.previous_score, t.previous_factors::jsonb AS previous_factors,
           t.score, t.factors::jsonb AS factors
    FROM unnest(%(agent_ids)s::uuid[], %(previous_scores)s::numeric[], %(previous_factors)s::text[],
                %(scores)s::numeric[], %(factors)s::text[])
         AS t(agent_id, previous_score, previous_factors, score, factors)
), locked AS (
    SELECT a.id
    FROM agents a
    WHERE a.id = ANY(%(agent_ids)s::uuid[]) AND a.organization_id = %(organization_id)s
    ORDER BY a.id
    FOR NO KEY UPDATE SKIP LOCKED
), updated AS (
    UPDATE agents a
    SET trust_score = i.score, trust_factors = i.factors
    FROM input i
    WHERE a.id = i.agent_id
      AND a.id IN (SELECT id FROM locked)
      AND a.trust_score = i.previous_score
      AND a.trust_factors = i.previous_factors
    RETURNING a.id, i.previous_score, i.score, i.factors
)
INSERT INTO trust_score_history (organization_id, agent_id, score, previous_score, factors, reason, actor)
SELECT %(organization_id)s, u.id, u.score, u.previous_score, u.factors, %(reason)s, %(actor)s
FROM updated u
RETURNING agent_id, previous_score, score
"""


class RecalculationFailed(AIMError):
    """The periodic recalculation failed for some organizations; the others were recalculated."""

    def __init__(self, failed: dict[uuid.UUID, Exception], changed: int) -> None:
        ids = ", ".join(str(org_id) for org_id in failed)
        super().__init__(f"trust recalculation failed for {len(failed)} organizations ({ids}); {changed} agents changed")
        self.failed = failed
        self.changed = changed


def _validate_label(field: str, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, f"missing {field}; expected a non-empty string such as 'periodic' or 'system'")
    if len(value) > MAX_LABEL_LENGTH:
        raise ValidationError(field, f"{field} is {len(value)} characters long; expected at most {MAX_LABEL_LENGTH}")


def _validate_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError("batch_size", f"invalid batch size {batch_size!r}; expected 1 to {MAX_BATCH_SIZE}")


def has_changed(previous_score: Decimal, previous_factors: Any, result: TrustScore) -> bool:
    """Return whether `result` differs from the stored state in rounded score or any factor's provenance."""
    if Decimal(str(result.score)) != previous_score:
        return True
    if not isinstance(previous_factors, dict):
        return True
    for factor in result.factors:
        stored = previous_factors.get(factor.name)
        if not isinstance(stored, dict) or stored.get("provenance") != factor.provenance:
            return True
    return False


def _write_changes(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID,
    scored: Sequence[tuple[AgentSnapshot, TrustScore]], *, reason: str, actor: str,
) -> int:
    """Store the changed scores among `scored` with their history rows and return how many were stored."""
    return len(_write_changed_rows(db, conn, organization_id, scored, reason=reason, actor=actor))


def _write_changed_rows(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID,
    scored: Sequence[tuple[AgentSnapshot, TrustScore]], *, reason: str, actor: str,
) -> list[dict[str, Any]]:
    """Do what `_write_changes` does, and return the stored rows: agent_id, previous_score and score."""
    changed = [(agent, result) for agent, result in scored if has_changed(agent.trust_score, agent.trust_factors, result)]
    if not changed:
        return []
    params = {
        "organization_id": organization_id,
        "agent_ids": [agent.agent_id for agent, _ in changed],
        "previous_scores": [agent.trust_score for agent, _ in changed],
        "previous_factors": [json.dumps(agent.trust_factors) for agent, _ in changed],
        "scores": [Decimal(str(result.score)) for _, result in changed],
        "factors": [json.dumps(result.factors_json()) for _, result in changed],
        "reason": reason,
        "actor": actor,
    }
    rows = db.fetch_all("trust.write_scores", _WRITE_SQL, params, conn=conn)
    # NOTE: with a caller's connection these counters move before the caller commits, and stay
    # moved if it rolls back.
    for row in rows:
        metrics.observe_trust_change(float(row["previous_score"]), float(row["score"]))
    # The callers drop the cached scores once the transaction commits (cache_hooks.scores_recalculated
    # or agent_changed), because entries dropped before the commit could be refilled with old scores.
    if len(rows) < len(changed):
        logger.info(
            "trust: %d of %d agents in organization %s changed concurrently and were skipped",
            len(changed) - len(rows), len(changed), organization_id,
        )
    return rows


def _recalculate_locked(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, agent_id: uuid.UUID,
    *, reason: str, actor: str, as_of: datetime | None,
) -> TrustScore:
    if as_of is None:
        as_of = gather.database_now(db, conn)
    agent = gather.load_agent(db, organization_id, agent_id, as_of=as_of, conn=conn, lock=True)
    if agent is None:
        raise NotFound("agent", agent_id)
    agent = gather.gather_inputs(db, organization_id, [agent], as_of=as_of, conn=conn)[0]
    result = combine(evaluate_factors(agent.inputs))
    if _write_changes(db, conn, organization_id, [(agent, result)], reason=reason, actor=actor):
        logger.debug("trust: agent %s score %s -> %s (%s)", agent_id, agent.trust_score, result.score, reason)
    return result


def recalculate_agent(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, *, reason: str, actor: str,
    conn: psycopg.Connection | None = None, as_of: datetime | None = None,
) -> TrustScore:
    """Recalculate one agent's trust score, store it if it changed, and return it.

    The agent row is locked for the duration, so concurrent recalculations of one agent serialise.
    A caller that recalculates several agents in one transaction should do so in agent id order,
    so that two such callers cannot deadlock.
    With `conn`, the work joins the caller's transaction (as a savepoint when one is open), so
    the new score commits together with the event that caused it. `as_of` defaults to the
    database's transaction time. Raises `NotFound` when the agent is not in the organization and
    `ValidationError` for an empty `reason` or `actor`.
    """
    _validate_label("reason", reason)
    _validate_label("actor", actor)
    if conn is not None:
        with conn.transaction():
            return _recalculate_locked(db, conn, organization_id, agent_id, reason=reason, actor=actor, as_of=as_of)
    with db.transaction() as own:
        return _recalculate_locked(db, own, organization_id, agent_id, reason=reason, actor=actor, as_of=as_of)


# The score of an agent before its first calculation: the column default of agents.trust_score.
# A new agent's history row records it as the previous score.
UNSCORED = Decimal("0.5")


@functools.cache
def new_agent_score() -> TrustScore:
    """Return the score of an agent at registration: no events, alerts, ratings or MCP use, and age zero.

    Every factor input is zero then, so every new agent gets this score. It equals
    `recalculate_agent(..., as_of=created_at)` right after the insert, without the reads and the
    UPDATE that would cost.
    """
    return combine(evaluate_factors(FactorInputs(age_seconds=0.0)))


def record_new_agent_score(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, agent_id: uuid.UUID, *, reason: str,
    actor: str,
) -> None:
    """Write the history row of an agent that `conn`'s open transaction inserts with `new_agent_score()`.

    It only sends the INSERT, so in a pipelined transaction it costs no round trip of its own.
    """
    _validate_label("reason", reason)
    _validate_label("actor", actor)
    score = new_agent_score()
    db.execute(
        "trust.new_agent_history",
        """INSERT INTO trust_score_history (organization_id, agent_id, score, previous_score, factors, reason, actor)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (organization_id, agent_id, Decimal(str(score.score)), UNSCORED, Jsonb(score.factors_json()), reason, actor),
        conn=conn,
    )
    # As in _write_changed_rows, the counter moves before the caller commits.
    metrics.observe_trust_change(float(UNSCORED), score.score)


def recalculate_agents(
    db: Database, organization_id: uuid.UUID, agent_ids: Sequence[uuid.UUID], *, reason: str, actor: str,
) -> list[uuid.UUID]:
    """Recalculate the given agents of one organization in one transaction, and return those whose score changed.

    Only those need their cached scores dropped: an agent whose factors changed but whose rounded
    score did not is stored, but left out of the result.

    The inputs of all the agents are read with one query per event table, which is what makes this
    cheaper than `recalculate_agent` per agent. Rows are not locked: as in
    `recalculate_organization`, an agent whose stored state changed after it was read is skipped,
    because the newer write already reflects fresher data. Ids not in the organization are ignored.
    """
    _validate_label("reason", reason)
    _validate_label("actor", actor)
    if not agent_ids:
        return []
    with db.transaction() as conn:
        as_of = gather.database_now(db, conn)
        agents = gather.load_agents(db, organization_id, agent_ids, as_of=as_of, conn=conn)
        agents = gather.gather_inputs(db, organization_id, agents, as_of=as_of, conn=conn)
        scored = [(agent, combine(evaluate_factors(agent.inputs))) for agent in agents]
        rows = _write_changed_rows(db, conn, organization_id, scored, reason=reason, actor=actor)
    return [row["agent_id"] for row in rows if row["score"] != row["previous_score"]]


def recalculate_organization(
    db: Database, organization_id: uuid.UUID, *, reason: str, actor: str,
    batch_size: int = DEFAULT_BATCH_SIZE, as_of: datetime | None = None,
) -> int:
    """Recalculate every agent of one organization and return how many scores changed.

    Agents are read in keyset order of (created_at, id), `batch_size` per transaction. Each batch
    uses its own database time unless `as_of` is given. An agent whose stored state changed after
    its batch read it is skipped, because the newer write already reflects fresher data. So is an
    agent whose row another transaction holds locked; the next run picks it up.
    """
    _validate_label("reason", reason)
    _validate_label("actor", actor)
    _validate_batch_size(batch_size)

    started = time.perf_counter()
    agents_seen = 0
    changed = 0
    after: tuple[datetime, uuid.UUID] | None = None
    logger.info("trust: recalculating organization %s (reason %r)", organization_id, reason)
    while True:
        with db.transaction() as conn:
            batch_as_of = as_of if as_of is not None else gather.database_now(db, conn)
            agents = gather.page_agents(db, organization_id, as_of=batch_as_of, limit=batch_size, after=after, conn=conn)
            if not agents:
                break
            agents = gather.gather_inputs(db, organization_id, agents, as_of=batch_as_of, conn=conn)
            scored = [(agent, combine(evaluate_factors(agent.inputs))) for agent in agents]
            changed += _write_changes(db, conn, organization_id, scored, reason=reason, actor=actor)
        agents_seen += len(agents)
        after = (agents[-1].created_at, agents[-1].agent_id)
        if len(agents) < batch_size:
            break
    logger.info(
        "trust: organization %s recalculated: %d agents, %d changed, %.2f s",
        organization_id, agents_seen, changed, time.perf_counter() - started,
    )
    return changed


def recalculate_all(
    db: Database, *, reason: str, actor: str, batch_size: int = DEFAULT_BATCH_SIZE, as_of: datetime | None = None,
) -> int:
    """Recalculate every organization's agents and return how many scores changed.

    A database error in one organization is logged and the job moves on to the next. When any
    organization failed, `RecalculationFailed` is raised at the end, listing them and the number
    of scores that did change.
    """
    _validate_label("reason", reason)
    _validate_label("actor", actor)
    _validate_batch_size(batch_size)

    started = time.perf_counter()
    changed = 0
    organizations = 0
    failed: dict[uuid.UUID, Exception] = {}
    after = uuid.UUID(int=0)
    logger.info("trust: periodic recalculation started (reason %r)", reason)
    while True:
        rows = db.fetch_all(
            "trust.page_organizations",
            "SELECT id FROM organizations WHERE id > %s ORDER BY id LIMIT %s",
            (after, batch_size),
        )
        for row in rows:
            organizations += 1
            try:
                changed += recalculate_organization(
                    db, row["id"], reason=reason, actor=actor, batch_size=batch_size, as_of=as_of
                )
            except psycopg.Error as error:
                logger.error("trust: recalculation of organization %s failed: %s", row["id"], error)
                failed[row["id"]] = error
        if len(rows) < batch_size:
            break
        after = rows[-1]["id"]
    logger.info(
        "trust: periodic recalculation finished: %d organizations, %d changed, %d failed, %.2f s",
        organizations, changed, len(failed), time.perf_counter() - started,
    )
    if failed:
        raise RecalculationFailed(failed, changed)
    return changed
