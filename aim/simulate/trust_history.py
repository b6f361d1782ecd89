"""Daily trust snapshots in the past, computed by the real trust code from the backfilled events.

At each midnight of the window, `snapshot` reads every agent's factor inputs as of that moment
with `aim.trust.gather` and scores them with `evaluate_factors` and `combine`, exactly as a
recalculation at that moment would. `history_rows` turns a snapshot into `trust_score_history`
rows dated at the snapshot, for the agents whose score or factor provenance changed since the
previous one (`aim.trust.recalc.has_changed`, the rule of the recalculation job).

NOTE: the alert counts come from the alerts' current status, because the alerts table keeps no
status history. The backfill writes alerts and their transitions in time order, so a snapshot
reads the right status of backfilled alerts. Alerts written before the backfill (by live traffic)
still count in snapshots dated before they were raised.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

import psycopg

from aim.db.pool import Database
from aim.trust import combine, evaluate_factors
from aim.trust import gather
from aim.trust.recalc import has_changed
from aim.trust.score import TrustScore

BACKFILL_ACTOR = "system:simulator-backfill"
BACKFILL_REASON = "simulated history: daily recalculation"
SNAPSHOT_BATCH = 500
_COPY_SQL = """COPY trust_score_history (organization_id, agent_id, score, previous_score, factors, reason, actor,
                                         created_at) FROM STDIN"""


def existing_snapshot_times(db: Database, organization_id: uuid.UUID, since: datetime) -> set[datetime]:
    """Return the times of backfill snapshots already stored since `since`, so a rerun skips them."""
    rows = db.fetch_all(
        "simulate.backfill_snapshots",
        """SELECT DISTINCT created_at FROM trust_score_history
           WHERE organization_id = %s AND actor = %s AND created_at >= %s""",
        (organization_id, BACKFILL_ACTOR, since),
    )
    return {row["created_at"] for row in rows}


def snapshot(
    db: Database, organization_id: uuid.UUID, agent_ids: set[uuid.UUID], as_of: datetime,
    conn: psycopg.Connection | None = None,
) -> dict[uuid.UUID, TrustScore]:
    """Score the agents among `agent_ids` that existed at `as_of`, from the data stored as of then."""
    scores: dict[uuid.UUID, TrustScore] = {}
    after = None
    while True:
        page = gather.page_agents(db, organization_id, as_of=as_of, limit=SNAPSHOT_BATCH, after=after, conn=conn)
        if not page:
            break
        after = (page[-1].created_at, page[-1].agent_id)
        existing = [agent for agent in page if agent.agent_id in agent_ids and agent.created_at <= as_of]
        for agent in gather.gather_inputs(db, organization_id, existing, as_of=as_of, conn=conn):
            scores[agent.agent_id] = combine(evaluate_factors(agent.inputs))
        if len(page) < SNAPSHOT_BATCH:
            break
    return scores


def history_rows(
    organization_id: uuid.UUID, scores: dict[uuid.UUID, TrustScore],
    previous: dict[uuid.UUID, tuple[Decimal, dict[str, Any]]], as_of: datetime,
) -> list[tuple]:
    """Return history rows for the agents whose snapshot changed, and update `previous` to this snapshot."""
    rows = []
    for agent_id, result in scores.items():
        before = previous.get(agent_id)
        if before is not None and not has_changed(before[0], before[1], result):
            continue
        factors = result.factors_json()
        rows.append((
            organization_id, agent_id, Decimal(str(result.score)), before[0] if before else None,
            json.dumps(factors), BACKFILL_REASON, BACKFILL_ACTOR, as_of,
        ))
        previous[agent_id] = (Decimal(str(result.score)), factors)
    return rows


def write_history(conn: psycopg.Connection, rows: Iterable[tuple]) -> None:
    with conn.cursor() as cursor, cursor.copy(_COPY_SQL) as copy:
        for row in rows:
            copy.write_row(row)
