"""Live mode: send planned actions at a fixed rate to a `TrafficTarget` until stopped.

`run_actions` is the action loop. It draws plans in one thread (so a seed gives the same plan
sequence), paces them at `rate` per second, and executes them on a small thread pool, because one
verification waits on PostgreSQL and Redis for a few milliseconds. When the target cannot keep up,
the loop skips the missed slots instead of bursting, and the summary shows the rate achieved.
Periodic tasks (trust recalculation, the simulated analyst, metric flushes, the summary line) run
in their own thread so a slow task does not stall the pacing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from aim import identity
from aim.errors import ValidationError
from aim.simulate import profiles, signed_requests
from aim.simulate.scenario import (
    DRIFTED_MCP,
    REPLAYED_NONCE,
    STALE_TIMESTAMP,
    TAMPERED_SIGNATURE,
    PlannedAction,
    TrafficPlanner,
)
from aim.simulate.target import ATTESTATION as ATTESTATION_OUTCOME
from aim.simulate.target import Outcome, TrafficTarget

logger = logging.getLogger(__name__)

MAX_RATE = 10_000.0
# A request older than this is not replayed: the verifier would reject it as stale first.
REPLAY_MAX_AGE_S = 240.0
RECENT_REQUESTS = 256
# The loop sleeps at most this long at a time, so Ctrl-C and stop() take effect quickly.
POLL_INTERVAL_S = 0.25


def validate_rate(rate: float) -> float:
    if not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE:
        raise ValidationError(
            "rate", f"{rate!r} is out of range; expected actions per second above 0, at most {MAX_RATE:g}"
        )
    return float(rate)


def validate_duration(duration: float) -> float:
    if not isinstance(duration, (int, float)) or duration < 0:
        raise ValidationError("duration", f"{duration!r} is invalid; expected seconds >= 0 (0 runs until stopped)")
    return float(duration)


@dataclass
class LiveStats:
    """Counts of one live run. Thread-safe: workers record, the summary thread reads."""

    started: float = field(default_factory=time.monotonic)
    verifications: int = 0
    allowed: int = 0
    denied: collections.Counter = field(default_factory=collections.Counter)
    attestations: int = 0
    drift: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, outcome: Outcome) -> None:
        with self._lock:
            if outcome.kind == ATTESTATION_OUTCOME:
                if outcome.decision == "accepted":
                    self.attestations += 1
                    self.drift += int(outcome.drift)
                else:
                    self.rejected[outcome.reason] += 1
                return
            self.verifications += 1
            if outcome.decision == "allowed":
                self.allowed += 1
            else:
                self.denied[outcome.reason] += 1

    def record_error(self) -> None:
        with self._lock:
            self.errors += 1

    def summary(self) -> str:
        """Return one line: totals, denials by reason, attestations and the rate achieved."""
        with self._lock:
            elapsed = max(time.monotonic() - self.started, 1e-9)
            total = self.verifications + self.attestations + sum(self.rejected.values()) + self.errors
            denied = ", ".join(f"{reason} {count}" for reason, count in self.denied.most_common()) or "none"
            line = (
                f"actions {total} ({total / elapsed:.1f}/s) | verifications {self.verifications}: "
                f"allowed {self.allowed}, denied {sum(self.denied.values())} ({denied}) | "
                f"attestations {self.attestations} (drift {self.drift})"
            )
            if self.rejected:
                line += " rejected " + ", ".join(f"{r} {c}" for r, c in self.rejected.most_common())
            if self.errors:
                line += f" | errors {self.errors}"
            return line


class ActionExecutor:
    """Turn planned actions into signed requests and send them to `target`.

    Replays resend a recent request unchanged. Each request is stamped with this host's clock and
    a fresh CSPRNG nonce, as a real client does.
    """

    def __init__(self, target: TrafficTarget) -> None:
        self.target = target
        self._recent: collections.deque[tuple[float, uuid.UUID, dict[str, Any]]] = collections.deque(
            maxlen=RECENT_REQUESTS
        )
        self._lock = threading.Lock()

    def execute(self, plan: PlannedAction) -> list[Outcome]:
        """Send the requests of `plan` and return their outcomes (two for a replay without history)."""
        if plan.is_attestation:
            return [self._attest(plan)]
        now = datetime.now(timezone.utc)
        agent = plan.agent
        if plan.kind == REPLAYED_NONCE:
            earlier = self._take_recent()
            if earlier is not None:
                return [self.target.verify(earlier[0], earlier[1])]
            # Nothing recent to replay yet: send a request, then the same request again.
            request = signed_requests.verification_request(
                agent, plan.action, plan.resource, timestamp=now, nonce=identity.new_nonce()
            )
            return [self.target.verify(agent.agent_id, request), self.target.verify(agent.agent_id, request)]
        if plan.kind == STALE_TIMESTAMP:
            request = signed_requests.stale_request(
                agent, plan.action, plan.resource, now=now, nonce=identity.new_nonce()
            )
            return [self.target.verify(agent.agent_id, request)]
        request = signed_requests.verification_request(
            agent, plan.action, plan.resource, timestamp=now, nonce=identity.new_nonce()
        )
        if plan.kind == TAMPERED_SIGNATURE:
            return [self.target.verify(agent.agent_id, signed_requests.tampered(request))]
        outcome = self.target.verify(agent.agent_id, request)
        if outcome.decision == "allowed":
            self._remember(agent.agent_id, request)
        return [outcome]

    def _attest(self, plan: PlannedAction) -> Outcome:
        assert plan.server is not None
        server = plan.server
        tools = list(server.tools)
        if plan.kind == DRIFTED_MCP:
            tools = profiles.drifted_tools(server.url, tools)
        request = signed_requests.attestation_request(
            plan.agent, server, tools, healthy=plan.healthy, timestamp=datetime.now(timezone.utc),
            nonce=identity.new_nonce(),
        )
        return self.target.attest(server.server_id, request)

    def _remember(self, agent_id: uuid.UUID, request: dict[str, Any]) -> None:
        with self._lock:
            self._recent.append((time.monotonic(), agent_id, request))

    def _take_recent(self) -> tuple[uuid.UUID, dict[str, Any]] | None:
        with self._lock:
            while self._recent:
                sent_at, agent_id, request = self._recent.popleft()
                if time.monotonic() - sent_at <= REPLAY_MAX_AGE_S:
                    return agent_id, request
        return None


@dataclass(frozen=True)
class PeriodicTask:
    """A function run every `interval_s` seconds in the periodic thread; its errors are logged."""

    name: str
    interval_s: float
    run: Callable[[], object]


class _PeriodicRunner:
    def __init__(self, tasks: Sequence[PeriodicTask], stop: threading.Event) -> None:
        self.tasks = list(tasks)
        self.stop = stop
        self.thread = threading.Thread(target=self._loop, name="aim-simulate-periodic", daemon=True)

    def _loop(self) -> None:
        due = {task.name: time.monotonic() + task.interval_s for task in self.tasks}
        while not self.stop.wait(POLL_INTERVAL_S):
            for task in self.tasks:
                if time.monotonic() >= due[task.name]:
                    run_task(task)
                    due[task.name] = time.monotonic() + task.interval_s


def run_task(task: PeriodicTask) -> None:
    """Run `task` once, logging instead of raising its errors, so one failure does not stop the loop."""
    try:
        task.run()
    except Exception:  # noqa: BLE001 - a periodic task must not end the simulation
        logger.exception("simulator periodic task %s failed", task.name)


def run_actions(
    planner: TrafficPlanner,
    execute: Callable[[PlannedAction], list[Outcome]],
    *,
    rate: float,
    duration: float = 0.0,
    workers: int = 4,
    periodic: Sequence[PeriodicTask] = (),
    stop: threading.Event | None = None,
    stats: LiveStats | None = None,
) -> LiveStats:
    """Execute planned actions at `rate` per second for `duration` seconds (0: until `stop` or Ctrl-C).

    `execute` sends one plan and returns its outcomes; pass `ActionExecutor(target).execute` with a
    `LocalTarget` or an HTTP target. Exceptions from `execute` are logged and counted, not raised.
    On return every submitted action has finished and each periodic task has run once more, so
    the final summary and trust scores include the last actions.
    """
    rate = validate_rate(rate)
    duration = validate_duration(duration)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise ValidationError("workers", f"{workers!r} is out of range; expected a whole number from 1 to 256")
    stop = stop or threading.Event()
    stats = stats or LiveStats()
    in_flight = threading.BoundedSemaphore(workers * 2)
    runner = _PeriodicRunner(periodic, stop)
    logger.info("simulator live traffic started: %.1f actions/s, %d workers, duration %s", rate, workers,
                f"{duration:g} s" if duration else "until stopped")

    def work(plan: PlannedAction) -> None:
        try:
            for outcome in execute(plan):
                stats.record(outcome)
        except Exception:  # noqa: BLE001 - one failed action is counted and the traffic goes on
            stats.record_error()
            logger.exception("simulated %s by agent %s failed", plan.kind, plan.agent.agent_id)
        finally:
            in_flight.release()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aim-simulate")
    runner.thread.start()
    try:
        _pace(planner, pool, work, in_flight, rate=rate, duration=duration, stop=stop)
    except KeyboardInterrupt:
        logger.info("simulator interrupted, finishing the actions in flight")
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        runner.thread.join()
        for task in periodic:
            run_task(task)
    logger.info("simulator live traffic stopped: %s", stats.summary())
    return stats


def _pace(planner, pool, work, in_flight: threading.BoundedSemaphore, *, rate: float, duration: float,
          stop: threading.Event) -> None:
    started = time.monotonic()
    slot_start = started
    sent = 0
    while not stop.is_set():
        now = time.monotonic()
        if duration and now - started >= duration:
            return
        due = slot_start + sent / rate
        if due - now > 0:
            stop.wait(min(due - now, POLL_INTERVAL_S))
            continue
        if now - due > 1.0:
            # More than a second behind: drop the missed slots rather than send them in a burst.
            slot_start = now - sent / rate
        if not in_flight.acquire(timeout=POLL_INTERVAL_S):
            continue
        plan = planner.next()
        pool.submit(work, plan)
        sent += 1
