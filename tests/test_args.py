import pytest
from hypothesis import given
from hypothesis import strategies as st

from flor.recording.args import convert, describe_declared, split_kwargs
from flor.errors import ArgumentError


def test_split_removes_group_and_keeps_script_options():
    kept, overrides = split_kwargs(["train.py", "--epochs", "3", "--kwargs", "hidden=75", "lr=0.01", "--verbose"])
    assert kept == ["train.py", "--epochs", "3", "--verbose"]
    assert overrides == {"hidden": "75", "lr": "0.01"}


def test_split_without_group_is_identity():
    assert split_kwargs(["train.py", "a", "-b"]) == (["train.py", "a", "-b"], {})


def test_value_may_contain_equals_and_minus():
    _, overrides = split_kwargs(["t.py", "--kwargs", "expr=a=b", "lr=-0.5"])
    assert overrides == {"expr": "a=b", "lr": "-0.5"}


@pytest.mark.parametrize("token", ["hidden", "=3", "not-a-name=1"])
def test_bad_pairs_are_refused(token):
    with pytest.raises(ArgumentError):
        split_kwargs(["t.py", "--kwargs", token])


@pytest.mark.parametrize(
    "raw, default, expected",
    [
        ("75", 500, 75),
        ("0.01", 1e-3, 0.01),
        ("1e-4", 1e-3, 1e-4),
        ("yes", False, True),
        ("0", True, False),
        ("adam", "sgd", "adam"),
        ("[1, 2]", [3], [1, 2]),
        ("(1, 2)", [3], [1, 2]),
        ("3", None, 3),
        ("hello", None, "hello"),
    ],
)
def test_convert_follows_default_type(raw, default, expected):
    value = convert(raw, default, "x")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("raw, default", [("abc", 5), ("1.5", 5), ("maybe", True), ("x", 0.1), ("{1: 2}", [1])])
def test_convert_refuses_wrong_type(raw, default):
    with pytest.raises(ArgumentError, match="expected"):
        convert(raw, default, "x")


def test_describe_declared():
    assert describe_declared({}) == "(none)"
    assert describe_declared({"a": 1, "b": "x"}) == "a=1, b='x'"


names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)


@pytest.mark.slow
@given(st.dictionaries(names, st.integers()), st.lists(st.from_regex(r"[a-z]{1,5}", fullmatch=True), max_size=3))
def test_ints_round_trip_through_the_command_line(pairs, script_args):
    argv = ["t.py", *script_args, "--kwargs", *[f"{k}={v}" for k, v in pairs.items()]]
    kept, overrides = split_kwargs(argv)
    assert kept == ["t.py", *script_args]
    assert {k: convert(v, 0, k) for k, v in overrides.items()} == pairs


@given(st.floats(allow_nan=False))
def test_floats_round_trip(value):
    assert convert(repr(value), 1.0, "x") == value
