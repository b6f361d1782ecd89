"""In-process per-minute roll-ups, flushed to the `metric_rollups` table by upsert.

`Recorder` accumulates, per (minute, metric name, labels), the observation count, the sum of the
values and sparse bucket counts in the layout of `aim.metrics.histogram`. `flush(db)` swaps the
buffer out under the lock and writes it with the lock released, because the flush's own queries are
timed through `aim.metrics.observe_db_query`, which calls back into this recorder. The upsert adds
to any row already present, so several processes that flush the same minute add up.

A failed flush puts the rows back into the buffer, so nothing is lost and nothing is counted twice.
NOTE: if the connection drops while COMMIT is in flight, the client cannot tell whether the server
committed, so that one batch may be counted twice on retry.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Mapping

import psycopg
from psycopg.types.json import Jsonb

from aim.errors import ValidationError
from aim.metrics import histogram

if TYPE_CHECKING:
    from aim.db.pool import Database

logger = logging.getLogger(__name__)

# Labels are stored as a sorted tuple of (key, value) pairs, so equal label sets share one series.
LabelKey = tuple[tuple[str, str], ...]
SeriesKey = tuple[int, str, LabelKey]  # (epoch minute, metric name, labels)

DEFAULT_MAX_SERIES = 100_000

UPSERT_SQL = """
INSERT INTO metric_rollups (minute, name, labels, count, sum, buckets)
VALUES (%s, %s, %s, %s, %s, %s::bigint[])
ON CONFLICT (name, minute, labels) DO UPDATE SET
    count = metric_rollups.count + EXCLUDED.count,
    sum = metric_rollups.sum + EXCLUDED.sum,
    buckets = aim_bucket_add(metric_rollups.buckets, EXCLUDED.buckets)
"""


@dataclass
class SeriesTotals:
    """Totals of one series in one minute. `buckets` maps bucket index to count; None for count-only series."""

    count: int = 0
    sum: float = 0.0
    buckets: dict[int, int] | None = None

    def add(self, other: "SeriesTotals") -> None:
        self.count += other.count
        self.sum += other.sum
        if other.buckets is None:
            return
        if self.buckets is None:
            self.buckets = {}
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def dense_buckets(self) -> list[int] | None:
        """Return the bucket counts in stored form (dense, trailing zeros dropped), or None."""
        if self.buckets is None:
            return None
        dense = [0] * histogram.BUCKET_COUNT
        for index, n in self.buckets.items():
            dense[index] = n
        return histogram.trim_trailing_zeros(dense)


@dataclass
class _FlushThread:
    thread: threading.Thread
    stop_event: threading.Event
    db: "Database"


def label_key(labels: Mapping[str, object]) -> LabelKey:
    """Return the series key of `labels`, for `Recorder.observe_now`."""
    return _label_key(labels)


def _label_key(labels: Mapping[str, object]) -> LabelKey:
    if not isinstance(labels, Mapping):
        raise ValidationError("labels", f"is a {type(labels).__name__}; expected a dict of label name to value")
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def _epoch_minute(at: datetime | float | None) -> int:
    if at is None:
        return int(time.time() // 60)
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValidationError("at", f"{at.isoformat()} has no time zone; expected an aware datetime")
        return int(at.timestamp() // 60)
    if isinstance(at, (int, float)) and math.isfinite(at):
        return int(at // 60)
    raise ValidationError("at", f"{at!r} is not a time; expected an aware datetime or a Unix timestamp in seconds")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValidationError("name", f"{name!r} is not a metric name; expected a non-empty string")


class Recorder:
    """Thread-safe per-minute accumulator of observations, flushed to PostgreSQL by upsert.

    `max_series` bounds the buffer while flushes keep failing: when putting back a failed batch
    would exceed it, the oldest minutes are dropped and a warning gives how many series were lost.
    """

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise ValidationError("max_series", f"{max_series} is too small; expected a whole number >= 1")
        self.max_series = max_series
        self._lock = threading.Lock()
        self._pending: dict[SeriesKey, SeriesTotals] = {}
        # Serialises flushes (the thread, stop() and direct calls) so batches are written in order.
        self._flush_lock = threading.Lock()
        self._flusher: _FlushThread | None = None
        self._flusher_lock = threading.Lock()
        # A forked child starts with the parent's buffer; flushing it there as well would count it twice.
        os.register_at_fork(after_in_child=functools.partial(_reset_in_child, weakref.ref(self)))

    def observe(self, name: str, labels: Mapping[str, object], seconds: float, *, at: datetime | float | None = None) -> None:
        """Add one observation of `seconds` to series (`name`, `labels`) in the minute of `at` (default now).

        `at` is an aware datetime or a Unix timestamp. Raise ValidationError on a negative or NaN
        duration, an empty name or labels that are not a mapping.
        """
        _check_name(name)
        self._add_observation((_epoch_minute(at), name, _label_key(labels)), seconds)

    def observe_now(self, name: str, label_key: LabelKey, seconds: float) -> None:
        """Do what `observe` does for the current minute, with labels already turned into a key by `label_key()`.

        For per-request callers that keep the key of each label set instead of sorting the labels
        on every call.
        """
        self._add_observation((int(time.time() // 60), name, label_key), seconds)

    def _add_observation(self, key: SeriesKey, seconds: float) -> None:
        index = histogram.bucket_index(seconds)
        with self._lock:
            totals = self._pending.get(key)
            if totals is None:
                totals = self._pending[key] = SeriesTotals(buckets={})
            elif totals.buckets is None:
                totals.buckets = {}
            totals.count += 1
            totals.sum += seconds
            totals.buckets[index] = totals.buckets.get(index, 0) + 1

    def count(self, name: str, labels: Mapping[str, object], n: int = 1, *, at: datetime | float | None = None) -> None:
        """Add `n` events to count-only series (`name`, `labels`) in the minute of `at` (default now)."""
        _check_name(name)
        if not isinstance(n, int) or n < 0:
            raise ValidationError("n", f"{n!r} is not a count; expected a whole number >= 0")
        key = (_epoch_minute(at), name, _label_key(labels))
        with self._lock:
            totals = self._pending.get(key)
            if totals is None:
                totals = self._pending[key] = SeriesTotals()
            totals.count += n

    def pending_series(self) -> int:
        """Return how many (minute, name, labels) series wait for the next flush."""
        with self._lock:
            return len(self._pending)

    def flush(self, db: "Database") -> bool:
        """Upsert every pending series into `metric_rollups` in one transaction.

        Return True when the buffer was written (or was empty). On a database error, log a warning,
        put the batch back for the next flush and return False.
        """
        # Imported here because aim.db.pool imports aim.metrics, which imports this module.
        from aim.db.pool import timed_query

        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return True
            rows = [
                (
                    datetime.fromtimestamp(minute * 60, tz=timezone.utc),
                    name,
                    Jsonb(dict(labels)),
                    totals.count,
                    totals.sum,
                    totals.dense_buckets(),
                )
                for (minute, name, labels), totals in batch.items()
            ]
            try:
                # The lock is not held here, so observe_db_query from timed_query can record this flush.
                with db.transaction() as conn, conn.cursor() as cur, timed_query("metrics.flush"):
                    cur.executemany(UPSERT_SQL, rows)
            except psycopg.Error as exc:
                self._restore(batch)
                logger.warning(
                    "metric roll-up flush failed, %d series kept for the next flush: %s: %s",
                    len(batch), type(exc).__name__, exc,
                )
                return False
            except BaseException:
                # Not a database error (a bug, or KeyboardInterrupt): keep the batch and re-raise.
                self._restore(batch)
                raise
            logger.debug("flushed %d metric roll-up series", len(rows))
            return True

    def start(self, db: "Database", interval_s: float = 10.0) -> None:
        """Start a daemon thread that flushes to `db` every `interval_s` seconds (settings.metrics_flush_interval_s).

        Calling it again while a thread runs does nothing, so each process has one flusher.
        """
        if not interval_s > 0:
            raise ValidationError("interval_s", f"{interval_s!r} is not a positive interval; expected seconds > 0")
        with self._flusher_lock:
            if self._flusher is not None and self._flusher.thread.is_alive():
                logger.debug("metric roll-up flusher already running")
                return
            stop_event = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(db, interval_s, stop_event), name="aim-metrics-flush", daemon=True
            )
            self._flusher = _FlushThread(thread, stop_event, db)
            thread.start()
        logger.info("metric roll-up flusher started, interval %.1f s", interval_s)

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the flush thread and flush once more. Return the result of that last flush (True if none ran)."""
        with self._flusher_lock:
            flusher, self._flusher = self._flusher, None
        if flusher is None:
            return True
        flusher.stop_event.set()
        flusher.thread.join(timeout_s)
        if flusher.thread.is_alive():
            logger.warning("metric roll-up flusher did not stop within %.1f s", timeout_s)
        ok = self.flush(flusher.db)
        logger.info("metric roll-up flusher stopped, final flush %s", "written" if ok else "failed")
        return ok

    def _run(self, db: "Database", interval_s: float, stop_event: threading.Event) -> None:
        while not stop_event.wait(interval_s):
            try:
                self.flush(db)
            except Exception:
                # The thread must outlive a bug in one flush; flush() has kept the batch for the next try.
                logger.exception("metric roll-up flush raised an unexpected error")

    def _restore(self, batch: dict[SeriesKey, SeriesTotals]) -> None:
        with self._lock:
            for key, totals in self._pending.items():
                if key in batch:
                    batch[key].add(totals)
                else:
                    batch[key] = totals
            self._pending = batch
            excess = len(batch) - self.max_series
            if excess <= 0:
                return
            # Drop the oldest minutes first: the newest data matters most once the database is back.
            oldest = sorted(batch, key=lambda key: key[0])[:excess]
            for key in oldest:
                del batch[key]
        logger.warning(
            "metric roll-up buffer is over %d series after failed flushes; dropped the %d oldest",
            self.max_series, excess,
        )

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flusher_lock = threading.Lock()
        self._pending = {}
        self._flusher = None


def _reset_in_child(recorder_ref: "weakref.ref[Recorder]") -> None:
    recorder = recorder_ref()
    if recorder is not None:
        recorder._reset_after_fork()


RECORDER = Recorder()
