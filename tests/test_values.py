"""Value limits: what a journaled or evaluated value may be, checked without recursion."""

from __future__ import annotations

import enum
import json
import math
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concordia.errors import ConcordiaError, ValueLimitError
from concordia.values import (
    DEFAULT_LIMITS,
    Limits,
    check_size,
    check_value,
    get_limits,
    set_limits,
)


def nested_lists(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_dicts(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def refused(value: Any, limits: Limits = DEFAULT_LIMITS) -> ValueLimitError:
    with pytest.raises(ValueLimitError) as caught:
        check_value(value, "step charge result", limits)
    return caught.value


def resolve(value: Any, pointer: str) -> Any:
    """Follow an RFC 6901 pointer; raises if it names nothing in ``value``."""
    if pointer == "":
        return value
    assert pointer.startswith("/")
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict):
            value = value[part]
        else:
            assert isinstance(value, list | tuple), (pointer, type(value))
            value = value[int(part)]
    return value


def compact_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode())


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# -- what passes


@pytest.mark.parametrize("value", [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, "", "héllo ✓",
    [], {}, [1, "a", None, [True, {"k": 2.5}]],
    {"order": {"id": "o-1", "lines": [{"sku": "A", "qty": 2}], "total": 12.5}},
])
def test_json_data_within_the_limits_passes(value: Any) -> None:
    check_value(value, "run input")


def test_tuples_count_as_lists_and_enums_as_their_values() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class State(enum.StrEnum):
        OK = "ok"

    check_value({"pair": (1, 2), "colour": Colour.RED, "state": State.OK}, "result")


def test_exactly_at_the_depth_limit_passes_one_more_fails() -> None:
    check_value(nested_lists(64), "result")
    check_value(nested_dicts(64), "result")
    err = refused(nested_lists(65))
    assert err.reason == "nested deeper than 64 levels"
    assert err.path == "/0" * 64
    assert resolve(nested_lists(65), err.path) == [1]


# -- what fails, and where


def test_a_million_levels_deep_is_refused_quickly_without_recursion() -> None:
    for value in (nested_lists(1_000_000), nested_dicts(100_000)):
        started = time.perf_counter()
        err = refused(value)
        assert time.perf_counter() - started < 1.0
        assert "nested deeper than 64 levels" in str(err)


def test_message_names_the_value_and_cuts_a_long_path() -> None:
    err = refused(nested_dicts(100))
    assert str(err).startswith("step charge result: nested deeper than 64 levels at /a/a/a/")
    assert str(err).endswith("/...")
    assert len(str(err)) < 120
    assert err.what == "step charge result"
    assert err.path == "/a" * 64  # the attribute keeps the whole pointer
    assert isinstance(err, ConcordiaError)


def test_size_is_counted_as_compact_json() -> None:
    limits = Limits(max_bytes=53)
    value = {"name": "x" * 20, "n": [1, 2.5, True, None]}
    assert compact_size(value) == 53
    check_value(value, "result", limits)
    err = refused({**value, "n": [10, 2.5, True, None]}, limits)
    assert err.reason == "larger than 53 bytes as JSON"
    assert err.path == "/n/3"  # where the running total crossed the limit


def test_size_of_a_large_value_fails_early() -> None:
    err = refused(["x" * 100_000] * 20)
    assert err.reason == "larger than 1 MiB as JSON"
    assert err.path == "/10"


def test_non_ascii_text_counts_its_utf8_bytes() -> None:
    check_value("é" * 9, "result", Limits(max_bytes=20))
    assert refused("é" * 10, Limits(max_bytes=20)).path == ""


def test_a_long_string_or_key_is_refused() -> None:
    limits = Limits(max_string_length=8)
    assert refused({"a": ["123456789"]}, limits).path == "/a/0"
    err = refused({"ok": 1, "k" * 9: 1}, limits)
    assert err.reason == "string of 9 characters exceeds 8"
    assert err.path == "/" + "k" * 9


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(number: float) -> None:
    err = refused({"drift": [0.1, number]})
    assert err.path == "/drift/1"
    assert "not a finite number" in err.reason


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 10**30])
def test_integers_beyond_64_bits_are_refused(number: int) -> None:
    err = refused({"amount": number})
    assert err.path == "/amount"
    assert "outside the signed 64-bit range" in err.reason


def test_a_huge_integer_is_named_by_its_size_not_printed() -> None:
    err = refused([10**10_000])  # repr() would refuse beyond 4300 digits
    assert "of 33220 bits" in err.reason


def test_non_string_keys_point_at_the_object_holding_them() -> None:
    value = {"x": [1, {"fine": 1, 2: 3}]}
    err = refused(value)
    assert err.reason == "key 2 (int) is not a string"
    assert err.path == "/x/1"
    assert resolve(value, err.path) == {"fine": 1, 2: 3}
    assert refused({None: 1}).path == ""


@pytest.mark.parametrize("value", [
    {1, 2}, b"bytes", datetime(2026, 1, 1, tzinfo=UTC), Decimal("1.5"), object(),
    timedelta(seconds=1), frozenset(),
])
def test_values_that_are_not_json_data_are_refused(value: Any) -> None:
    err = refused({"field": value})
    assert err.path == "/field"
    assert f"{type(value).__name__} is not JSON data" in err.reason


def test_a_lone_surrogate_is_refused() -> None:
    assert "not valid Unicode" in refused({"s": "ok\ud800"}).reason


def test_a_cycle_is_refused_as_too_deep() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert "nested deeper" in refused(loop).reason


def test_pointer_escapes_slash_and_tilde() -> None:
    value = {"a/b": {"c~d": math.nan}}
    err = refused(value)
    assert err.path == "/a~1b/c~0d"
    assert math.isnan(resolve(value, err.path))


# -- the lenient size check for expression results


def test_check_size_accepts_cel_values_but_bounds_depth_and_size() -> None:
    check_size({"at": datetime(2026, 1, 1, tzinfo=UTC), "b": b"x", 1: math.nan,
                "big": 10**30}, "expression result")
    with pytest.raises(ValueLimitError, match="larger than 16 bytes"):
        check_size(["x" * 20], "expression result", max_bytes=16)
    with pytest.raises(ValueLimitError, match="bytes of length"):
        check_size(b"x" * 10, "expression result", Limits(max_string_length=4))
    with pytest.raises(ValueLimitError, match="nested deeper"):
        check_size(nested_lists(100_000), "expression result")


# -- configuration


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        Limits(max_depth=0)
    with pytest.raises(ValueError, match="expression_time"):
        Limits(expression_time=0)


def test_checks_follow_the_limits_in_force_unless_given_limits() -> None:
    try:
        set_limits(max_depth=2)
        assert "nested deeper than 2 levels" in str(refused(nested_lists(3), get_limits()))
        with pytest.raises(ValueLimitError, match="nested deeper than 2 levels"):
            check_value(nested_lists(3), "result")
        check_value(nested_lists(3), "result", DEFAULT_LIMITS)
    finally:
        set_limits(DEFAULT_LIMITS)


def test_set_limits_changes_and_restores_the_limits_in_force() -> None:
    assert get_limits() == DEFAULT_LIMITS
    try:
        changed = set_limits(expression_time=2.5)
        assert get_limits() is changed
        assert changed.expression_time == 2.5
        assert changed.max_depth == DEFAULT_LIMITS.max_depth
    finally:
        set_limits(DEFAULT_LIMITS)
    assert get_limits() == DEFAULT_LIMITS


# -- properties

# Strings without characters JSON escapes, so that the compact encoding is an exact
# oracle for the size check.
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc"),
                              blacklist_characters='"\\'), max_size=12)
_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | _text)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_text, inner, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(1, 6), st.integers(1, 400), st.integers(1, 12))
def test_passes_exactly_when_within_the_limits(value: Any, depth: int, size: int,
                                               length: int) -> None:
    limits = Limits(max_depth=depth, max_bytes=size, max_string_length=length)
    strings = _strings(value)
    within = (depth_of(value) <= depth and compact_size(value) <= size
              and all(len(s) <= length for s in strings))
    if within:
        check_value(value, "value", limits)
    else:
        with pytest.raises(ValueLimitError) as caught:
            check_value(value, "value", limits)
        resolve(value, caught.value.path)


_bad_leaves = st.sampled_from([math.nan, math.inf, 2**64, -(2**70), b"x", {1}])
_maybe_bad = st.recursive(
    _scalars | _bad_leaves,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_text | st.integers(0, 3), inner, max_size=4),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_maybe_bad, st.integers(1, 6), st.integers(1, 400))
def test_the_error_path_exists_in_the_value(value: Any, depth: int, size: int) -> None:
    try:
        check_value(value, "value", Limits(max_depth=depth, max_bytes=size))
    except ValueLimitError as err:
        resolve(value, err.path)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
