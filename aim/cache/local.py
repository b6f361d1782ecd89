"""Process-local cache state: L1 entries, invalidation epochs and cached L2 generations.

L1 entries are the same tagged-JSON bytes that L2 holds, decoded on every hit, so each caller gets
its own copy and a caller that mutates a returned dict cannot change what other callers see.

Each cache has an invalidation epoch. A loader reads the epoch before it fetches from L2 or
computes, and `put_if_current` stores the result only if no invalidation of that cache ran
meanwhile. Without that, a read that started before a write could put the old value back into L1
after the write had dropped it. The same check guards the cached generation numbers that name
the current L2 keys of each cache.

A cache whose policy has `stale_s > 0` keeps what `invalidate_all` drops as its stale store for
`stale_s` seconds (see `aim.cache.policy`), together with values whose loads an invalidation
overtook. `get_stale` reads it; nothing else does.
"""

from __future__ import annotations

import threading
import time
from typing import Iterable, NamedTuple

import cachetools

from aim.cache.policy import L1_TTL_CAP_S, CachePolicy

# A process that missed an invalidate_all message re-reads the generation from Redis at least this
# often. The listener clears generations on every resubscription, so this is only a backstop.
GENERATION_TTL_S = L1_TTL_CAP_S


class _Entry(NamedTuple):
    data: bytes
    ttl_s: float


def _time_to_use(_key: str, entry: _Entry, now: float) -> float:
    return now + entry.ttl_s


class LocalCache:
    """Thread-safe process-local state for a set of cache policies.

    Caches whose policy has `l1_ttl_s == 0` store no entries but still have an epoch and a generation.
    """

    def __init__(self, policies: Iterable[CachePolicy]) -> None:
        policies = list(policies)
        self._lock = threading.Lock()
        self._maxsizes = {p.name: p.l1_maxsize for p in policies}
        self._stores: dict[str, cachetools.TLRUCache] = {p.name: self._new_store(p.name) for p in policies if p.uses_l1}
        self._stale_s = {p.name: p.stale_s for p in policies if p.uses_l1 and p.stale_s > 0}
        # cache -> (the store that invalidate_all replaced, monotonic time it was replaced)
        self._stale: dict[str, tuple[cachetools.TLRUCache, float]] = {}
        self._epochs: dict[str, int] = {p.name: 0 for p in policies}
        self._generations: cachetools.TTLCache = cachetools.TTLCache(
            maxsize=max(1, len(policies)), ttl=GENERATION_TTL_S, timer=time.monotonic
        )

    def _new_store(self, cache: str) -> cachetools.TLRUCache:
        return cachetools.TLRUCache(maxsize=self._maxsizes[cache], ttu=_time_to_use, timer=time.monotonic)

    def get(self, cache: str, key: str) -> bytes | None:
        store = self._stores.get(cache)
        if store is None:
            return None
        with self._lock:
            entry = store.get(key)
        return None if entry is None else entry.data

    def epoch(self, cache: str) -> int:
        with self._lock:
            return self._epochs[cache]

    def put(self, cache: str, key: str, data: bytes, ttl_s: float) -> None:
        store = self._stores.get(cache)
        if store is None or ttl_s <= 0:
            return
        with self._lock:
            store[key] = _Entry(data, ttl_s)

    def put_if_current(self, cache: str, key: str, data: bytes, ttl_s: float, epoch: int) -> bool:
        """Store the entry unless `cache` was invalidated after `epoch` was read. Return True when stored."""
        store = self._stores.get(cache)
        if store is None or ttl_s <= 0:
            return False
        with self._lock:
            if self._epochs[cache] != epoch:
                if cache in self._stale_s:
                    # Newer than anything in the stale store, so readers that overlap the next
                    # reload get this value rather than an older one.
                    self._live_stale_store(cache, create=True)[key] = _Entry(data, ttl_s)
                return False
            store[key] = _Entry(data, ttl_s)
            return True

    def get_stale(self, cache: str, key: str) -> bytes | None:
        """Return the value of `key` that `invalidate_all` dropped less than `stale_s` ago, or None."""
        with self._lock:
            store = self._live_stale_store(cache, create=False)
            entry = None if store is None else store.get(key)
        return None if entry is None else entry.data

    def _live_stale_store(self, cache: str, *, create: bool) -> cachetools.TLRUCache | None:
        """Return the stale store of `cache` if it is younger than `stale_s`; the caller holds the lock."""
        pair = self._stale.get(cache)
        now = time.monotonic()
        if pair is not None and now - pair[1] <= self._stale_s[cache]:
            return pair[0]
        if pair is not None:
            del self._stale[cache]
        if not create:
            return None
        store = self._new_store(cache)
        self._stale[cache] = (store, now)
        return store

    def generation(self, cache: str) -> int | None:
        """Return the cached L2 generation of `cache`, or None when it must be read from Redis."""
        with self._lock:
            return self._generations.get(cache)

    def put_generation_if_current(self, cache: str, generation: int, epoch: int) -> None:
        with self._lock:
            if self._epochs[cache] == epoch:
                self._generations[cache] = generation

    def invalidate(self, cache: str, key: str) -> None:
        """Drop `key`, including any stale copy: a single-key invalidation is never served stale."""
        with self._lock:
            self._epochs[cache] += 1
            store = self._stores.get(cache)
            if store is not None:
                store.pop(key, None)
            stale = self._stale.get(cache)
            if stale is not None:
                stale[0].pop(key, None)

    def invalidate_all(self, cache: str, generation: int | None = None) -> None:
        """Drop every entry of `cache` and set its generation, or forget it when `generation` is None.

        With `stale_s`, the dropped entries become the stale store. If there are none, because an
        earlier invalidation dropped them and no load has finished since, the stale store stays.
        """
        with self._lock:
            self._epochs[cache] += 1
            store = self._stores.get(cache)
            if store is not None and cache in self._stale_s:
                if len(store):
                    # Swapping the store object keeps this O(1) however many pages are cached.
                    self._stale[cache] = (store, time.monotonic())
                    self._stores[cache] = self._new_store(cache)
            elif store is not None:
                store.clear()
            if generation is None:
                self._generations.pop(cache, None)
            else:
                self._generations[cache] = generation

    def clear(self) -> None:
        """Drop all entries and generations, as after a gap in which invalidations may have been lost."""
        with self._lock:
            for name in self._epochs:
                self._epochs[name] += 1
            for store in self._stores.values():
                store.clear()
            self._stale.clear()
            self._generations.clear()

    def size(self, cache: str) -> int:
        store = self._stores.get(cache)
        if store is None:
            return 0
        with self._lock:
            store.expire()
            return len(store)
