"""Min/max downsampling keeps the shape of a curve: its extremes, its order, its ends."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import pytest

from flor.ui.downsample import min_max


def test_short_curves_are_untouched():
    x, y = np.arange(5.0), np.array([3.0, 1, 4, 1, 5])
    sx, sy = min_max(x, y, 10)
    assert sx.tolist() == x.tolist() and sy.tolist() == y.tolist()


def test_a_spike_survives_a_million_points():
    y = np.sin(np.linspace(0, 20, 1_000_000))
    y[123_457] = 50.0
    x, sy = min_max(np.arange(len(y), dtype=float), y, 2000)
    assert len(x) <= 2000 and sy.max() == 50.0 and 123_457 in x.tolist()
    assert np.all(np.diff(x) > 0)


def test_all_nan_buckets_leave_a_gap():
    y = np.ones(100)
    y[40:60] = np.nan
    x, sy = min_max(np.arange(100.0), y, 20)
    assert np.isnan(sy).any() and np.nanmax(sy) == 1.0


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 500), elements=st.floats(-1e6, 1e6)), st.integers(2, 100))
def test_extremes_kept_and_order_preserved(y, points):
    x = np.arange(len(y), dtype=float)
    sx, sy = min_max(x, y, points)
    assert len(sx) <= max(points, 2) or len(y) <= points
    assert np.all(np.diff(sx) > 0)
    assert sy.max() == y.max() and sy.min() == y.min()
    assert np.array_equal(y[sx.astype(int)], sy)  # every point shown is a real point
