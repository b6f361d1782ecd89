"""In-process single-flight: concurrent calls for one key share one execution of the loader."""

from __future__ import annotations

import threading
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class _Call(Generic[T]):
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Run `fn` once per key among the threads that ask for that key at the same time.

    The first caller (the leader) runs `fn`. Callers that arrive while it runs wait and receive the
    leader's result, or the leader's exception re-raised. The key is forgotten once the leader
    finishes, so a later call runs `fn` again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call[T]] = {}

    def do(self, key: Hashable, fn: Callable[[], T]) -> tuple[T, bool]:
        """Return `(result, shared)`. `shared` is False for the leader and True for every waiter."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if leader:
                call = _Call()
                self._calls[key] = call

        if not leader:
            # No timeout: the leader always sets `done` in its finally block, and a waiter that gave
            # up would only start the same slow call again.
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result, True

        try:
            call.result = fn()
            return call.result, False
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()

    def running(self, key: Hashable) -> bool:
        """Return True while a leader runs `fn` for `key`."""
        with self._lock:
            return key in self._calls

    def in_flight(self) -> int:
        """Return the number of keys whose leader is still running."""
        with self._lock:
            return len(self._calls)
