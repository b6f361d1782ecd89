"""Per-minute request limits per API key or user, counted in Redis and shared by every API process.

Each subject gets a fixed one-minute window: `INCR` on a key named after the subject and the minute,
which expires shortly after the minute ends. A fixed window lets a burst of up to twice the limit
straddle a minute boundary, which is acceptable for abuse protection and costs one round trip.
When Redis is unreachable requests are let through (fail open), with a rate-limited warning,
because refusing all traffic would turn a cache outage into an API outage.

The limit is AIM_RATE_LIMIT_PER_MINUTE: a whole number from 0 to 10,000,000, where 0 turns limiting
off. The default is 6000 (100 requests per second per subject).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Mapping

import redis
import redis.asyncio
from starlette.concurrency import run_in_threadpool

from aim.cache.throttle import RateLimitedWarning
from aim.errors import ConfigError

logger = logging.getLogger(__name__)
_redis_warning = RateLimitedWarning(logger, interval_s=30.0)

ENV_VAR = "AIM_RATE_LIMIT_PER_MINUTE"
DEFAULT_LIMIT_PER_MINUTE = 6000
MAX_LIMIT_PER_MINUTE = 10_000_000
WINDOW_S = 60
# After a Redis failure, requests skip the counter for this long, so an outage does not add a
# failing Redis round trip (with redis-py's own retries) to every request.
FAILURE_BACKOFF_S = 5.0
# The counter outlives its minute by a little, so a slow clock on another replica still finds it.
KEY_TTL_S = WINDOW_S + 5


def limit_from_env(env: Mapping[str, str] | None = None) -> int:
    """Read AIM_RATE_LIMIT_PER_MINUTE. Raise ConfigError naming the variable for a bad value."""
    env = os.environ if env is None else env
    raw = (env.get(ENV_VAR) or "").strip()
    if not raw:
        return DEFAULT_LIMIT_PER_MINUTE
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{ENV_VAR}={raw!r} is not an integer; expected requests per minute from 0 (off) to {MAX_LIMIT_PER_MINUTE}"
        ) from None
    if not 0 <= value <= MAX_LIMIT_PER_MINUTE:
        raise ConfigError(f"{ENV_VAR}={value} is out of range; expected 0 (off) to {MAX_LIMIT_PER_MINUTE}")
    return value


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int


class RateLimiter:
    """Fixed-window counter per subject, such as `api_key:<id>` or `user:<id>`.

    `hit` uses the blocking `client`. `hit_async` uses `async_client` when one is given, so async
    routes count a request without a threadpool hop, and otherwise runs `hit` in the threadpool.
    Both count in the same Redis keys.
    """

    def __init__(
        self, client: redis.Redis, prefix: str, limit_per_minute: int, async_client: redis.asyncio.Redis | None = None,
    ) -> None:
        self.client = client
        self.async_client = async_client
        self.prefix = prefix
        self.limit = limit_per_minute
        self._skip_until = 0.0

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def hit(self, subject: str, now: float | None = None) -> RateDecision:
        """Count one request by `subject` and return whether it is within the limit."""
        if not self._counting():
            return self._let_through()
        key, retry_after = self._window(subject, now)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.incr(key)
            # Plain EXPIRE, not EXPIRE NX: the embedded Redis 6.2 lacks NX, and re-arming the TTL of a
            # per-minute key only keeps it a little longer.
            pipe.expire(key, KEY_TTL_S)
            count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            return self._failed(exc)
        return self._decide(count, retry_after)

    async def hit_async(self, subject: str, now: float | None = None) -> RateDecision:
        """Do what `hit` does, on the event loop when an async client is set."""
        if self.async_client is None:
            return await run_in_threadpool(self.hit, subject, now)
        if not self._counting():
            return self._let_through()
        key, retry_after = self._window(subject, now)
        try:
            async with self.async_client.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, KEY_TTL_S)
                count = int((await pipe.execute())[0])
        except redis.RedisError as exc:
            return self._failed(exc)
        return self._decide(count, retry_after)

    def _counting(self) -> bool:
        return self.enabled and time.monotonic() >= self._skip_until

    def _let_through(self) -> RateDecision:
        return RateDecision(True, self.limit, self.limit, 0) if self.enabled else RateDecision(True, 0, 0, 0)

    def _window(self, subject: str, now: float | None) -> tuple[str, int]:
        """Return the counter key of `subject` in the minute of `now`, and the seconds until that minute ends."""
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        retry_after = max(int((window + 1) * WINDOW_S - now), 1)
        return f"{self.prefix}ratelimit:{subject}:{window}", retry_after

    def _decide(self, count: int, retry_after: int) -> RateDecision:
        return RateDecision(count <= self.limit, self.limit, max(self.limit - count, 0), retry_after)

    def _failed(self, exc: redis.RedisError) -> RateDecision:
        self._skip_until = time.monotonic() + FAILURE_BACKOFF_S
        _redis_warning.warning("rate limiting is off while Redis fails (requests are let through): %s", exc)
        return RateDecision(True, self.limit, self.limit, 0)
