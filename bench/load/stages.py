"""The staged load profile of the Locust scenario, kept apart from the locustfile because importing
Locust monkey-patches the process with gevent."""

from __future__ import annotations

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
