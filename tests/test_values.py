import math

import numpy as np
import pytest
import torch

from flor import values


@pytest.mark.parametrize("value", [0, -3, 2**70, 1.5, "text", "", True, False, None, [1, "a"], {"k": [1.0]}])
def test_round_trip(value):
    prepared = value if values.is_plain(value) else values.prepare(value, "n")
    assert values.decode(*values.encode(prepared)) == value


def test_nan_and_infinity_survive():
    for value in (math.inf, -math.inf):
        assert values.decode(*values.encode(value)) == value
    assert math.isnan(values.decode(*values.encode(math.nan)))


def test_numpy_and_tensor_scalars_become_numbers():
    assert values.prepare(np.float32(0.5), "n") == 0.5
    assert type(values.prepare(np.int64(3), "n")) is int
    assert values.prepare(torch.tensor(2.5), "n") == 2.5
    assert values.prepare(torch.tensor([7]), "n") == 7


def test_arrays_are_copied_as_json_at_log_time():
    array = np.arange(3)
    prepared = values.prepare(array, "a")
    array[:] = 0
    assert values.decode(*values.encode(prepared)) == [0, 1, 2]


def test_unserializable_becomes_repr_with_one_warning():
    class Thing:
        def __repr__(self):
            return "<thing>"

    with pytest.warns(UserWarning, match="repr"):
        prepared = values.prepare(Thing(), "thing-name-unique")
    assert values.decode(*values.encode(prepared)) == "<thing>"
