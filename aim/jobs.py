"""Periodic jobs that the API process (and `aim up`) runs in background threads.

Each job takes a Redis lease named after it before running, so with several API replicas one of
them runs a given job per interval. When Redis is unreachable the job runs anyway: every job here is
idempotent, so running it twice only costs time.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import redis

from aim import trust
from aim.db.partitions import ensure_partitions
from aim.runtime import Runtime
from aim.services import cache_hooks
from aim.services.actor import system

logger = logging.getLogger(__name__)

DIRTY_BATCH = 500


@dataclass(frozen=True)
class Job:
    name: str
    interval_s: float
    run: Callable[[Runtime], object]


def process_dirty_agents(runtime: Runtime, limit: int = DIRTY_BATCH) -> int:
    """Recalculate trust for agents queued by verification, and return how many scores changed.

    Only changed scores drop cache entries, so verification keeps reading an unchanged score from
    L1 instead of Redis and PostgreSQL.
    """
    key = f"{runtime.settings.redis_prefix}trust:dirty"
    try:
        members = runtime.redis.spop(key, limit) or []
    except redis.RedisError as exc:
        logger.warning("trust queue unreadable, the periodic full recalculation covers it: %s", exc)
        return 0
    agent_ids = [uuid.UUID(m.decode() if isinstance(m, bytes) else m) for m in members]
    if not agent_ids:
        return 0
    rows = runtime.db.fetch_all(
        "jobs.dirty_agents", "SELECT id, organization_id FROM agents WHERE id = ANY(%s)", (agent_ids,)
    )
    by_organization: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
    for row in rows:
        by_organization[row["organization_id"]].append(row["id"])
    actor = system("trust-queue").label
    changed = 0
    for organization_id, ids in by_organization.items():
        # Agents deleted since they were queued are simply not found.
        rescored = trust.recalculate_agents(runtime.db, organization_id, ids, reason="new verification events",
                                            actor=actor)
        if rescored:
            cache_hooks.scores_recalculated(rescored)
        changed += len(rescored)
    return changed


def recalculate_all_trust(runtime: Runtime) -> int:
    try:
        return trust.recalculate_all(runtime.db, reason="periodic recalculation",
                                     actor=system("trust-recalc").label)
    finally:
        # Organizations that did recalculate committed, even when another one failed.
        cache_hooks.scores_recalculated()


def expire_attestations(runtime: Runtime) -> int:
    from aim.services import mcp_servers

    return mcp_servers.expire_attestations(runtime.db)


def maintain_audit_partitions(runtime: Runtime) -> int:
    now = datetime.now(timezone.utc)
    return ensure_partitions(runtime.db, now - timedelta(days=31), now + timedelta(days=92))


DEFAULT_JOBS = (
    Job("trust-queue", 5.0, process_dirty_agents),
    Job("trust-recalc", 600.0, recalculate_all_trust),
    Job("attestation-expiry", 3600.0, expire_attestations),
    Job("audit-partitions", 86400.0, maintain_audit_partitions),
)


def _take_lease(runtime: Runtime, job: Job) -> bool:
    try:
        key = f"{runtime.settings.redis_prefix}jobs:{job.name}"
        return bool(runtime.redis.set(key, b"1", nx=True, px=max(int(job.interval_s * 900), 1000)))
    except redis.RedisError:
        return True


def run_once(runtime: Runtime, job: Job) -> object | None:
    """Run `job` now unless another process holds its lease. Errors are logged, not raised."""
    if not _take_lease(runtime, job):
        return None
    started = time.perf_counter()
    try:
        result = job.run(runtime)
    except Exception:  # noqa: BLE001 - a failing job must not kill the scheduler thread
        logger.exception("job %s failed", job.name)
        return None
    logger.debug("job %s finished in %.2f s: %s", job.name, time.perf_counter() - started, result)
    return result


class Scheduler:
    """Runs each job in its own daemon thread, first after one interval, until `stop()`."""

    def __init__(self, runtime: Runtime, jobs: tuple[Job, ...] = DEFAULT_JOBS) -> None:
        self.runtime = runtime
        self.jobs = jobs
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for job in self.jobs:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"aim-job-{job.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        logger.info("scheduler started: %s", ", ".join(f"{j.name} every {j.interval_s:g} s" for j in self.jobs))

    def _loop(self, job: Job) -> None:
        while not self._stop.wait(job.interval_s):
            run_once(self.runtime, job)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()
        logger.info("scheduler stopped")
