"""flor.environment.rng: one capture and restore of the random state, and its encoding in the store."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from flor.environment import rng


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


def test_a_dataloader_iterator_that_lives_across_iterations_is_rebuilt_where_it_was():
    """makemore's InfiniteDataLoader: one iterator, its sampler on its own generator; kept with a
    checkpoint (creation record + batches drawn) and rebuilt without loading data (issue 25)."""
    import sys

    import torch
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    from flor.checkpoints import iterators

    iterators.install()
    data = TensorDataset(torch.arange(100))

    class Infinite:
        def __init__(self, generator):
            sampler = RandomSampler(data, replacement=True, num_samples=10**9, generator=generator)
            self.loader = DataLoader(data, sampler=sampler, batch_size=4)
            self.data_iter = iter(self.loader)

    def batches(holder, count):
        return [next(holder.data_iter)[0].tolist() for _ in range(count)]

    torch.manual_seed(0)
    holder = Infinite(torch.Generator().manual_seed(5))
    frame = sys._getframe()
    batches(holder, 7)
    kept, missing = iterators.capture((frame,))
    assert missing == [] and kept["holder.data_iter"]["drawn"] == 7
    expected = batches(holder, 3)

    holder = Infinite(torch.Generator().manual_seed(5))  # a replay: the iterator as made before the loop
    frame = sys._getframe()
    iterators.restore((frame,), kept)
    assert batches(holder, 3) == expected

    plain = iter(range(10))  # noqa: F841 - an iterator flor cannot keep: listed, when the script advances one
    assert "plain" in iterators.capture((sys._getframe(),))[1]
    assert "plain" not in iterators.capture((sys._getframe(),), script_advances=False)[1]


def test_generators_are_told_by_type_whatever_was_asked_before():
    """The kind of a value is kept per type (rng._kind): asking about one value of a type must
    never answer for another type, a subclass or a look-alike."""

    class Mine(random.Random):  # a user's subclass: not the random module's own generator
        pass

    class Holder:
        sampler = None

    loader = torch.utils.data.DataLoader(list(range(8)), shuffle=True, generator=torch.Generator().manual_seed(3))
    frame_values = {"g": torch.Generator(), "r": random.Random(1), "n": np.random.default_rng(2),
                    "s": np.random.RandomState(4), "m": Mine(5), "h": Holder(), "t": torch.zeros(1),
                    "loader": loader, "x": 3}
    for _ in range(3):  # the second and third answers come from the per-type cache
        kinds = {name: rng._kind(value) for name, value in frame_values.items()}
        assert kinds == {"g": "torch", "r": "python", "n": "numpy", "s": "randomstate", "m": None, "h": None,
                         "t": None, "loader": None, "x": None}

    class FakeFrame:
        f_locals = frame_values

    found = rng.generators_in([FakeFrame()])
    assert set(found) == {"g", "r", "n", "s", "loader.generator"}
    assert found["loader.generator"] is loader.generator


def test_classes_that_compare_equal_are_still_told_apart():
    """A metaclass may make two classes equal (and hash alike): the per-type answer is by identity."""

    class Same(type):
        def __eq__(cls, other):
            return isinstance(other, Same)

        def __hash__(cls):
            return 1

    Plain = Same("Plain", (), {})
    Drawing = Same("Drawing", (random.Random,), {"__module__": "random"})
    assert Plain == Drawing
    assert rng._kind(Plain()) is None
    assert rng._kind(Drawing(1)) == "python"
    assert rng._kind(Plain()) is None
