"""Downsampling of long curves that keeps their shape: the minimum and maximum of each bucket.

A chart is at most a few thousand pixels wide, so a run with a million steps is cut into
equal buckets of consecutive points and each bucket keeps its lowest and highest point, in x
order. Spikes and the envelope of a noisy loss survive; an average would hide them.

>>> import numpy as np
>>> x, y = min_max(np.arange(10.0), np.array([0, 5, 1, 1, 1, 1, 1, -3, 1, 1.0]), 4)
>>> y.tolist()
[0.0, 5.0, 1.0, -3.0]
"""

from __future__ import annotations

import numpy as np


def min_max(x: np.ndarray, y: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` of (x, y), sorted by x: each bucket's min and max point.

    NaN values are ignored when choosing a bucket's extremes; a bucket of only NaN keeps one
    NaN, so the chart shows the gap.

    >>> min_max(np.arange(3.0), np.arange(3.0), 100)[1].tolist()
    [0.0, 1.0, 2.0]
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    points = max(int(points), 2)
    n = len(x)
    if n <= points:
        return x, y
    buckets = points // 2
    size = -(-n // buckets)  # ceiling: every bucket but the last is full
    padded = size * buckets
    # Pad with NaN so the points reshape into (buckets, size); padding never wins min or max.
    ys = np.full(padded, np.nan)
    ys[:n] = y
    grid = ys.reshape(buckets, size)
    nan_rows = np.isnan(grid).all(axis=1)
    low = np.where(np.isnan(grid), np.inf, grid).argmin(axis=1)
    high = np.where(np.isnan(grid), -np.inf, grid).argmax(axis=1)
    base = np.arange(buckets) * size
    first = np.minimum(low, high) + base
    second = np.maximum(low, high) + base
    # Empty trailing buckets (only padding) vanish; all-NaN buckets keep one NaN point.
    valid = base < n
    first, second, nan_rows = first[valid], second[valid], nan_rows[valid]
    second = np.where(nan_rows, first, second)
    order = np.stack([first, second], axis=1).ravel()
    keep = np.ones(len(order), dtype=bool)
    keep[1::2] = order[1::2] != order[0::2]
    order = np.minimum(order[keep], n - 1)
    return x[order], y[order]
