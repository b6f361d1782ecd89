"""The staged load profile of the load tests, kept apart from the locustfile because importing
Locust monkey-patches the process with gevent.

Locust follows it with a user count (`locustfile.StagedShape`), wrk with planned send times
(`send_offsets`, used by `wrk_staged`).
"""

from __future__ import annotations

import numpy as np

# Requests per second that each Locust user offers, so 200 users offer 1,000.
USER_RATE = 5.0
# (seconds, users at the end of the stage): each stage moves linearly from the previous user count.
# Ramp to 100 users over 2 min, hold 5 min, ramp to 200 over 2 min, hold 5 min, ramp down over 2 min.
DEFAULT_STAGES = ((120, 100), (300, 100), (120, 200), (300, 200), (120, 0))
QUICK_SECONDS = 120
PROFILES = ("default", "quick")


def stages(profile: str) -> tuple[tuple[float, int], ...]:
    """Return the stages of `profile`: the default 16 min, or the same shape scaled to 2 min (quick)."""
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is invalid; expected one of {', '.join(PROFILES)}")
    if profile == "default":
        return DEFAULT_STAGES
    scale = QUICK_SECONDS / sum(seconds for seconds, _ in DEFAULT_STAGES)
    return tuple((seconds * scale, users) for seconds, users in DEFAULT_STAGES)


# Step of the request-count integral behind `send_offsets`, in seconds.
SCHEDULE_STEP_S = 0.001


def duration(profile: str) -> float:
    """Return the seconds that `profile` lasts."""
    return float(sum(seconds for seconds, _ in stages(profile)))


def send_offsets(profile: str, share: float) -> np.ndarray:
    """Return the planned send times, in seconds from the start, of an endpoint with `share` of the load.

    The offered rate follows the user count, which moves linearly within each stage:
    `share * USER_RATE * users(t)` requests per second. The k-th request goes out when the running
    integral of that rate reaches k + 0.5, so a stage of constant rate gets evenly spaced sends and
    the count over the run is the integral, rounded.
    """
    knots_s = np.cumsum([0.0] + [seconds for seconds, _ in stages(profile)])
    knots_users = np.array([0.0] + [float(users) for _, users in stages(profile)])
    times = np.arange(0.0, knots_s[-1], SCHEDULE_STEP_S)
    rate = share * USER_RATE * np.interp(times, knots_s, knots_users)
    sent = np.cumsum(rate) * SCHEDULE_STEP_S
    total = int(sent[-1] + 0.5)
    return times[np.searchsorted(sent, np.arange(total) + 0.5)]
