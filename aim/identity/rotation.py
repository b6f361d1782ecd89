"""Selection of the public keys that may verify a signature around a key rotation.

After a rotation the previous key stays valid for a grace period (default 24 h) so that agents
still signing with it keep working while they pick up the new key. The grace period is half-open:
the previous key verifies while `now < previous_valid_until`, and from the deadline on only the
current key does. All datetimes must be timezone-aware, because a naive one from a database or a
client would silently shift the deadline by the server's UTC offset.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aim.errors import ValidationError

DEFAULT_KEY_GRACE_PERIOD = timedelta(hours=24)


def previous_key_valid_until(rotated_at: datetime, grace_period: timedelta = DEFAULT_KEY_GRACE_PERIOD) -> datetime:
    """Return the deadline of the previous key for a rotation at `rotated_at`.

    Raise `ValidationError("grace_period", ...)` for a negative grace period, and ValueError for a
    naive `rotated_at`. A zero grace period retires the previous key at once.
    """
    _require_aware("rotated_at", rotated_at)
    if grace_period < timedelta(0):
        raise ValidationError("grace_period", f"expected a duration of zero or more; got {grace_period}")
    return rotated_at + grace_period


def select_verification_keys(
    current: bytes,
    previous: bytes | None,
    previous_valid_until: datetime | None,
    now: datetime,
) -> tuple[bytes, ...]:
    """Return the public keys that may verify a signature at `now`, the current key first.

    The previous key is included only while `now < previous_valid_until`. A previous key without a
    deadline is never included, because an unbounded grace period would keep a retired key valid
    forever. Raise ValueError for a naive datetime.
    """
    _require_aware("now", now)
    if previous is None or previous == current:
        return (current,)
    if previous_valid_until is None:
        return (current,)
    _require_aware("previous_valid_until", previous_valid_until)
    if now < previous_valid_until:
        return (current, previous)
    return (current,)


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime; got naive {value.isoformat()}")
