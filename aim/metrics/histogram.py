"""The fixed, log-spaced bucket layout shared by every roll-up row, and percentiles from bucket counts.

The layout comes from ddsketch's `LogarithmicMapping` with `RELATIVE_ACCURACY` = 0.04, so each bucket
is `GAMMA` ~= 1.083 times wider than the one below it. Index 0 is the underflow bucket (values at or
below `LOWEST_BOUND`, about 10 microseconds), indices 1..N are the log-spaced buckets up to
`HIGHEST_BOUND` (about 100 s), and the last index is the overflow bucket. Because the layout is a
module constant, bucket arrays from any process and any minute merge by element-wise addition.

Stored arrays may be shorter than `BUCKET_COUNT`: trailing zero buckets are dropped before writing,
and a missing tail entry is read as zero. Changing any constant here makes old rows unreadable, so
a new layout needs a new metric name or a data migration.
"""

from __future__ import annotations

import bisect
import math
from typing import Iterable, Sequence

import numpy as np
from ddsketch.mapping import LogarithmicMapping

from aim.errors import ValidationError

RELATIVE_ACCURACY = 0.04
LOWEST_VALUE_S = 10e-6
HIGHEST_VALUE_S = 100.0

MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
GAMMA: float = MAPPING.gamma
# Bucket key k covers (GAMMA**(k-1), GAMMA**k]; see ddsketch.mapping.KeyMapping.key.
_KEY_MIN = MAPPING.key(LOWEST_VALUE_S)
_KEY_MAX = MAPPING.key(HIGHEST_VALUE_S)

# BOUNDARIES[i] is the upper bound (inclusive) of bucket index i for i in 0..N; the overflow bucket
# N+1 has no upper bound. bisect_left over this tuple maps a value to its bucket index.
BOUNDARIES: tuple[float, ...] = tuple(GAMMA ** k for k in range(_KEY_MIN - 1, _KEY_MAX + 1))
LOWEST_BOUND = BOUNDARIES[0]
HIGHEST_BOUND = BOUNDARIES[-1]
UNDERFLOW_INDEX = 0
OVERFLOW_INDEX = len(BOUNDARIES)
BUCKET_COUNT = len(BOUNDARIES) + 1

# Value reported for a percentile that lands in each bucket. For the log-spaced buckets it is the
# ddsketch representative value, within RELATIVE_ACCURACY of every value in the bucket. The
# underflow and overflow buckets are open-ended, so they report their finite bound instead. A
# percentile is therefore clamped to [LOWEST_BOUND, HIGHEST_BOUND].
REPRESENTATIVE_VALUES: np.ndarray = np.array(
    [LOWEST_BOUND] + [MAPPING.value(k) for k in range(_KEY_MIN, _KEY_MAX + 1)] + [HIGHEST_BOUND]
)

_BOUNDARY_ARRAY = np.array(BOUNDARIES)


def bucket_index(seconds: float) -> int:
    """Return the bucket index of one observation in seconds; raise ValidationError if it is negative or NaN."""
    if not seconds >= 0.0:  # also catches NaN
        raise ValidationError("seconds", f"{seconds!r} is not a duration; expected a number >= 0")
    return bisect.bisect_left(BOUNDARIES, seconds)


def bucket_counts(samples: Iterable[float] | np.ndarray) -> np.ndarray:
    """Return a dense int64 array of BUCKET_COUNT counts for many observations in seconds."""
    values = np.asarray(samples, dtype=np.float64)
    if values.size and not (values >= 0.0).all():
        raise ValidationError("samples", "contains a negative or NaN value; expected durations >= 0 in seconds")
    # side="left" gives the same index as bisect.bisect_left in bucket_index.
    indices = np.searchsorted(_BOUNDARY_ARRAY, values, side="left")
    return np.bincount(indices, minlength=BUCKET_COUNT).astype(np.int64)


def to_dense(buckets: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Return `buckets` (possibly shorter than the layout, or None) as a dense int64 array of BUCKET_COUNT."""
    dense = np.zeros(BUCKET_COUNT, dtype=np.int64)
    if buckets is None:
        return dense
    values = np.asarray(buckets, dtype=np.int64)
    if values.size > BUCKET_COUNT:
        raise ValidationError(
            "buckets", f"has {values.size} entries; expected at most {BUCKET_COUNT} for this bucket layout"
        )
    dense[: values.size] = values
    return dense


def trim_trailing_zeros(buckets: Sequence[int]) -> list[int]:
    """Return `buckets` as a list without trailing zeros; the stored form of a bucket array."""
    end = len(buckets)
    while end > 0 and buckets[end - 1] == 0:
        end -= 1
    return [int(c) for c in buckets[:end]]


def quantiles(buckets: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Return the value in seconds at each quantile q in `qs` (0..1) of one dense bucket array.

    Return None for every q when the histogram is empty, so "no traffic" never turns into 0 or NaN.
    """
    row = quantile_matrix(np.asarray(buckets, dtype=np.int64).reshape(1, -1), qs)[0]
    return [None if math.isnan(v) else float(v) for v in row]


def quantile_matrix(buckets: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Return an array of shape (rows, len(qs)) with each row's quantiles in seconds; NaN for empty rows.

    `buckets` has shape (rows, BUCKET_COUNT), one merged histogram per row. The rank of q is
    q * (n - 1) over the row's n observations, as in DDSketch, and the result is the representative
    value of the bucket that contains that rank.
    """
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValidationError("q", f"{q!r} is out of range; expected a quantile from 0 to 1")
    result = np.full((buckets.shape[0], len(qs)), np.nan)
    if buckets.size == 0:
        return result
    cumulative = np.cumsum(buckets, axis=1)
    totals = cumulative[:, -1]
    has_data = totals > 0
    for j, q in enumerate(qs):
        ranks = q * (totals[has_data] - 1)
        # The first bucket whose running count exceeds the rank contains it.
        indices = (cumulative[has_data] > ranks[:, None]).argmax(axis=1)
        result[has_data, j] = REPRESENTATIVE_VALUES[indices]
    return result


def growth_factor() -> float:
    """Return the largest ratio between consecutive bucket bounds of the layout."""
    ratios = [BOUNDARIES[i + 1] / BOUNDARIES[i] for i in range(len(BOUNDARIES) - 1)]
    return max(ratios) if ratios else math.inf
