"""Tagged JSON for cached values: JSON types plus datetime, date, time, timedelta, UUID, Decimal and bytes.

Cached values are stored as UTF-8 JSON, never pickle, so nothing read back from Redis can run code.
Types that JSON lacks are written as tag objects `{"$t": TAG, "v": ...}`. A dict key that a caller
wrote starting with `$` is stored with one more `$` in front and the dict is wrapped in a `map` tag,
so user data can never be mistaken for a tag. That keeps decoding a single `json.loads` with an
O(1) check per object.

Round trips are exact, with these conversions. Tuples come back as lists, bytearray and
memoryview as bytes, and str and int subclasses (such as enum members) as plain str and int. An
aware datetime or time comes back with a fixed UTC offset (`datetime.timezone`) in place of a
named zone such as a `ZoneInfo`. The instant and the offset are unchanged, but under PEP 495 an
ambiguous or skipped local time of a named zone then compares unequal to the original. A time whose tzinfo
gives no offset without a date (any `ZoneInfo`) comes back naive.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from aim.errors import ValidationError

TAG = "$t"
_SUPPORTED = (
    "dict with str keys, list, tuple, str, int, float, bool, None, datetime, date, time, timedelta, UUID, Decimal or bytes"
)


class DecodeError(ValueError):
    """Stored bytes are not a value written by `encode` (corrupt, truncated, or another format)."""


def encode(value: Any) -> bytes:
    """Serialise `value` to tagged JSON bytes.

    Raise `ValidationError` naming the path of the first value of an unsupported type, or of a
    dict key that is not a str (JSON would silently turn it into a str).
    """
    # ensure_ascii escapes lone surrogates too, which UTF-8 could not encode.
    return json.dumps(_to_json(value, "value"), separators=(",", ":")).encode("ascii")


def decode(data: bytes | str) -> Any:
    """Parse bytes written by `encode`. Raise `DecodeError` when they are not such bytes."""
    try:
        return json.loads(data, object_hook=_from_json)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, InvalidOperation) as exc:
        raise DecodeError(f"cached bytes are not tagged JSON: {exc}") from exc


def _to_json(value: Any, path: str) -> Any:
    # Order matters: bool is an int, datetime is a date.
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return _dict_to_json(value, path)
    if isinstance(value, (list, tuple)):
        return [_to_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, (dt.datetime, dt.time)):
        return _clock_to_json(value)
    if isinstance(value, dt.date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, Decimal):
        # str() keeps the exponent, so Decimal("1.10") does not come back as Decimal("1.1").
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    raise ValidationError(path, f"type {type(value).__name__} cannot be cached; expected {_SUPPORTED}")


def _clock_to_json(value: dt.datetime | dt.time) -> dict:
    # The UTC offset is stored apart, in microseconds, because Python 3.11's fromisoformat drops an
    # offset such as "+00:00:00.000001" whose only non-zero part is the microseconds.
    tag = "datetime" if isinstance(value, dt.datetime) else "time"
    result = {TAG: tag, "v": value.replace(tzinfo=None).isoformat()}
    offset = value.utcoffset()
    if offset is not None:
        result["o"] = offset // dt.timedelta(microseconds=1)
    return result


def _dict_to_json(value: dict, path: str) -> dict:
    escaped = False
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValidationError(
                f"{path} key {key!r}", f"dict keys must be str, got {type(key).__name__}; convert keys to str first"
            )
        item_json = _to_json(item, f"{path}[{key!r}]")
        if key.startswith("$"):
            key = "$" + key
            escaped = True
        result[key] = item_json
    if escaped:
        return {TAG: "map", "v": result}
    return result


def _from_json(obj: dict) -> Any:
    tag = obj.get(TAG)
    if tag is None:
        return obj
    raw = obj["v"]
    if tag == "datetime" or tag == "time":
        parsed = (dt.datetime if tag == "datetime" else dt.time).fromisoformat(raw)
        offset_us = obj.get("o")
        if offset_us is None:
            return parsed
        return parsed.replace(tzinfo=dt.timezone(dt.timedelta(microseconds=offset_us)))
    if tag == "date":
        return dt.date.fromisoformat(raw)
    if tag == "timedelta":
        days, seconds, microseconds = raw
        return dt.timedelta(days=days, seconds=seconds, microseconds=microseconds)
    if tag == "uuid":
        return uuid.UUID(raw)
    if tag == "decimal":
        return Decimal(raw)
    if tag == "bytes":
        return base64.b64decode(raw, validate=True)
    if tag == "map":
        # The inner dict went through this hook already and, having no bare "$t" key, came back as is.
        return {(key[1:] if key.startswith("$") else key): item for key, item in raw.items()}
    raise ValueError(f"unknown tag {tag!r}")
