"""Cache names, their TTLs and TTL jitter.

Each named cache has an L2 (Redis) TTL and an L1 (in-process) TTL. L1 keeps an entry for at most
`L1_TTL_CAP_S` seconds, and never longer than the L2 copy it came from has left to live.

Why cap L1 at 30 s when pub/sub pushes invalidations anyway: Redis pub/sub delivers at most once.
The listener clears the whole L1 whenever it (re)subscribes, so a dropped connection loses nothing,
but a write made while Redis is unreachable cannot publish at all. Other processes then keep the
old value until their L1 entry expires, and the cap bounds that staleness to 30 s while a
dashboard refresh within the same 30 s is still served from memory.

Stale while reloading: a cache with `stale_s > 0` keeps the L1 values that `invalidate_all` drops
for `stale_s` seconds. While one caller reloads such a key, in this process or under the L2 lock
of another process, other callers get the dropped value at once instead of waiting for the reload.
The first caller after a write always reloads, so a client that writes and then reads gets its
write back. A reader that overlaps another reader's reload may get the value from before the write.
The list and overview caches use it, because each registration drops them in every process and
the API receives many reads per write. Without it, a load test at 1,000 requests per second with
30 registrations per second queued most reads behind reloads (see docs/benchmarks.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from aim.errors import ValidationError

L1_TTL_CAP_S = 30.0
# Spread of TTLs: a TTL of T seconds becomes a uniform draw from [T * 0.9, T * 1.1].
JITTER_FRACTION = 0.10
DEFAULT_L1_MAXSIZE = 10_000
# How long the list and overview caches keep values dropped by invalidate_all for readers that
# overlap a reload. A reload takes milliseconds, so this only bounds how old a served value can be.
LIST_STALE_S = 5.0


@dataclass(frozen=True)
class CachePolicy:
    """TTLs and L1 size of one named cache. `l1_ttl_s == 0` keeps the cache out of L1.

    `stale_s` is how long a value dropped by `invalidate_all` may still be served to callers that
    overlap its reload (see the module docstring); 0 makes them wait for the reload.
    """

    name: str
    ttl_s: float
    l1_ttl_s: float
    l1_maxsize: int = DEFAULT_L1_MAXSIZE
    stale_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or any(ch.isspace() or ch == ":" for ch in self.name):
            raise ValidationError(
                "cache", f"name {self.name!r} is invalid; expected a non-empty word without ':' or spaces"
            )
        if not self.ttl_s > 0:
            raise ValidationError("ttl_s", f"{self.ttl_s!r} is not positive; expected seconds > 0")
        if not 0 <= self.l1_ttl_s <= self.ttl_s:
            raise ValidationError(
                "l1_ttl_s", f"{self.l1_ttl_s!r} is out of range; expected seconds from 0 to ttl_s ({self.ttl_s})"
            )
        if self.l1_maxsize < 1:
            raise ValidationError("l1_maxsize", f"{self.l1_maxsize!r} is below 1; expected a positive entry count")
        if not 0 <= self.stale_s <= L1_TTL_CAP_S or (self.stale_s and not self.l1_ttl_s):
            raise ValidationError(
                "stale_s", f"{self.stale_s!r} is out of range; expected seconds from 0 to {L1_TTL_CAP_S:g}, "
                           "and 0 for a cache without L1"
            )

    @property
    def uses_l1(self) -> bool:
        return self.l1_ttl_s > 0


def _policy(name: str, ttl_s: float, *, l1: bool = True, stale_s: float = 0.0) -> CachePolicy:
    return CachePolicy(name, ttl_s, min(ttl_s, L1_TTL_CAP_S) if l1 else 0.0, stale_s=stale_s)


POLICIES: Mapping[str, CachePolicy] = MappingProxyType(
    {
        p.name: p
        for p in (
            _policy("dashboard_stats", 5 * 60, stale_s=LIST_STALE_S),
            _policy("sessions", 24 * 3600),
            _policy("agent_metadata", 15 * 60),
            # Rendered GET /agents pages, dropped by every agent write, trust recalculation and
            # last_seen_at update (which verification writes at most once a minute per agent).
            _policy("agent_list", 60, stale_s=LIST_STALE_S),
            _policy("mcp_server_list", 10 * 60, stale_s=LIST_STALE_S),
            _policy("trust_scores", 60),
            # Rate-limit windows are shared counters, so a per-process copy would let every process
            # count against its own stale snapshot. They live in Redis only.
            _policy("rate_limit", 60, l1=False),
        )
    }
)


def jittered_ttl(ttl_s: float, fraction: float = JITTER_FRACTION, rng: random.Random | None = None) -> float:
    """Return `ttl_s` scaled by a uniform factor in [1 - fraction, 1 + fraction].

    Keys written together (a warm-up, a page load) then expire spread over the interval instead of
    all at once, so their recomputation does not arrive at PostgreSQL as one burst.
    """
    if not 0 <= fraction < 1:
        raise ValidationError("fraction", f"{fraction!r} is out of range; expected a number in [0, 1)")
    draw = (rng or random).uniform(1 - fraction, 1 + fraction)
    return ttl_s * draw
