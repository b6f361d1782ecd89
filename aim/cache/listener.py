"""The pub/sub listener thread that applies other processes' invalidations to this process's L1."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

import redis
from redis.backoff import EqualJitterBackoff

from aim.cache.throttle import RateLimitedWarning

logger = logging.getLogger(__name__)

# How long one get_message call blocks, which is also how long stop() may wait for the thread.
POLL_INTERVAL_S = 0.25
# Reconnect delays grow from about 0.1 s and are capped at 10 s, each with random jitter so that
# every process does not reconnect at the same instant after a Redis restart.
BACKOFF = EqualJitterBackoff(cap=10.0, base=0.1)


class InvalidationListener:
    """Subscribe to `channel` on a daemon thread and pass each message to `on_message`.

    `on_subscribed` runs after every (re)subscription, including redis-py's own silent reconnects,
    because messages published while the connection was down are lost (Redis pub/sub delivers at
    most once) and the caller must assume it missed some. Connection errors are logged with the
    attempt number and retried with jittered exponential backoff; nothing is raised to the caller.
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        on_message: Callable[[dict[str, Any]], None],
        on_subscribed: Callable[[], None],
        name: str = "aim-cache-invalidation",
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._on_subscribed = on_subscribed
        self._name = name
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._bad_message_warning = RateLimitedWarning(logger)
        self.subscriptions = 0

    def start(self, wait_s: float) -> bool:
        """Start the thread and wait up to `wait_s` for the first subscription. Return True once subscribed."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
            logger.info("cache invalidation listener started on channel %s", self._channel)
        return self._subscribed.wait(wait_s)

    def stop(self, timeout_s: float = 2.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("cache invalidation listener on %s did not stop within %.1f s", self._channel, timeout_s)
        else:
            logger.info("cache invalidation listener stopped on channel %s", self._channel)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=POLL_INTERVAL_S)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        if failures:
                            logger.info("cache invalidation listener reconnected after %d failed attempts", failures)
                        failures = 0
                        self._handle_subscribed()
                    elif message["type"] == "message":
                        self._handle_message(message["data"])
            except (redis.RedisError, OSError) as exc:
                failures += 1
                self._subscribed.clear()
                delay = BACKOFF.compute(failures)
                logger.warning(
                    "cache invalidation listener lost its Redis connection on %s: %s; "
                    "reconnecting in %.2f s (attempt %d)",
                    self._channel, exc, delay, failures,
                )
                self._stop.wait(delay)
            except Exception:
                # A bug in a callback must not end invalidation for the life of the process.
                failures += 1
                self._subscribed.clear()
                delay = BACKOFF.compute(failures)
                logger.exception(
                    "cache invalidation listener failed on %s; restarting in %.2f s (attempt %d)",
                    self._channel, delay, failures,
                )
                self._stop.wait(delay)
            finally:
                _close_quietly(pubsub)

    def _handle_subscribed(self) -> None:
        self.subscriptions += 1
        self._on_subscribed()
        self._subscribed.set()
        logger.info("cache invalidation listener subscribed to %s (subscription %d)", self._channel, self.subscriptions)

    def _handle_message(self, data: bytes | str) -> None:
        try:
            message = json.loads(data)
        except ValueError as exc:
            self._bad_message_warning.warning("ignored malformed invalidation message on %s: %s", self._channel, exc)
            return
        if not isinstance(message, dict):
            self._bad_message_warning.warning("ignored invalidation message on %s that is not an object", self._channel)
            return
        self._on_message(message)


def _close_quietly(pubsub: redis.client.PubSub) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError) as exc:
        logger.debug("closing the invalidation pub/sub connection failed: %s", exc)
