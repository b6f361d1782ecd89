"""A log warning that is emitted at most once per interval, with a count of the ones it held back."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable


class RateLimitedWarning:
    """Log through `logger` at WARNING at most once per `interval_s` seconds.

    Calls inside the interval are counted, and the next emitted record says how many were
    suppressed, so a flood of identical failures shows up as one line every `interval_s`.
    """

    def __init__(
        self, logger: logging.Logger, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_emit: float | None = None
        self._suppressed = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log `message % args` unless one was logged in the last interval. Return True when logged."""
        with self._lock:
            now = self._clock()
            if self._last_emit is not None and now - self._last_emit < self._interval_s:
                self._suppressed += 1
                return False
            suppressed = self._suppressed
            self._suppressed = 0
            self._last_emit = now
        if suppressed:
            self._logger.warning(
                message + " (%d similar warnings suppressed in the last %.0f s)", *args, suppressed, self._interval_s
            )
        else:
            self._logger.warning(message, *args)
        return True

    def reset(self) -> None:
        """Forget the last emit time and the suppressed count, so the next call logs."""
        with self._lock:
            self._last_emit = None
            self._suppressed = 0
