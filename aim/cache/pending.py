"""Invalidations that could not reach Redis, kept to replay once it is reachable again.

Without a replay, a write made while this process could not reach Redis leaves the old value in
L2 for the rest of its TTL (up to 24 h for sessions), and other processes keep serving it.

NOTE: the queue lives in process memory. A process that exits before Redis is reachable again
loses it, and the old L2 values then live until their TTL.
"""

from __future__ import annotations

import threading

# Past this many keys, replaying whole-cache invalidations is cheaper than one call per key.
MAX_PENDING_KEYS = 1000


class PendingInvalidations:
    """A thread-safe set of `(cache, key)` pairs, where key None means the whole cache.

    When more than `max_keys` single keys are pending, they collapse into whole-cache entries for
    their caches, so memory stays bounded during a long outage.
    """

    def __init__(self, max_keys: int = MAX_PENDING_KEYS) -> None:
        self._lock = threading.Lock()
        self._max_keys = max_keys
        self._entries: dict[tuple[str, str | None], None] = {}

    def add(self, cache: str, key: str | None) -> None:
        with self._lock:
            if (cache, None) in self._entries:
                return
            self._entries[(cache, key)] = None
            if len(self._entries) > self._max_keys:
                caches = dict.fromkeys(name for name, _key in self._entries)
                self._entries = {(name, None): None for name in caches}

    def take(self) -> list[tuple[str, str | None]]:
        """Remove and return every pending entry, whole-cache entries first."""
        with self._lock:
            entries = sorted(self._entries, key=lambda entry: entry[1] is not None)
            self._entries = {}
        return entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
