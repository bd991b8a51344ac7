"""flor.rng: one capture and restore of the random state, and its encoding in the store."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from flor import rng


def _draws():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_capture_then_restore_gives_the_same_draws():
    state = rng.capture()
    expected = _draws()
    rng.restore(state)
    assert _draws() == expected


def test_encoded_state_is_json_and_round_trips():
    state = rng.capture()
    expected = _draws()
    blob = rng.encode(state)
    assert blob.startswith(b"{")  # data, not a pickle
    rng.restore(rng.decode(blob))
    assert _draws() == expected


def test_reads_the_pickled_state_of_older_databases():
    old = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state().numpy().tobytes(),
    }
    expected = _draws()
    rng.restore(rng.decode(pickle.dumps(old)))
    assert _draws() == expected


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickled_state_cannot_run_code():
    with pytest.raises(pickle.UnpicklingError):
        rng.decode(pickle.dumps({"python": _Boom()}))


def test_nothing_recorded_restores_nothing():
    assert rng.decode(None) is None
    rng.restore(None)
