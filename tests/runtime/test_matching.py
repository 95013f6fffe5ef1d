"""Unit tests of await matching (``concordia.runtime.matching``), table by table.

They prove which ``A == B`` of a match expression becomes the index key (either order,
the first indexable ``&&`` conjunct, never a split inside string literals or brackets),
which expressions cannot be indexed, that keys are canonical JSON, that an event or run
missing a field yields no key and no match, and above all that the index never hides a
match: whenever the whole expression matches, the event's key finds the run's await.
"""

from __future__ import annotations

from typing import Any

import pytest

from concordia.runtime.matching import compile_match

INDEXABLE = [
    # (expression, event side, run side)
    ("event.data.run_id == results.create_run.run_id",
     "event.data.run_id", "results.create_run.run_id"),
    ("results.create_run.run_id == event.data.run_id",
     "event.data.run_id", "results.create_run.run_id"),
    ("event.data.id == run.correlation_id", "event.data.id", "run.correlation_id"),
    ('event.data.kind == "paid" && event.data.order == input.order_id',
     "event.data.order", "input.order_id"),
    ("event.data.order == input.order_id && event.data.user == input.user",
     "event.data.order", "input.order_id"),
    ("event.data.id == input.id && event.data.amount >= input.min",
     "event.data.id", "input.id"),
    ('event.data.note == "a && b == c" && event.data.id == input.id',
     "event.data.id", "input.id"),
    ("event.data.note == 'x==y'&&input.id==event.data.id", "event.data.id", "input.id"),
    (r"event.data.s == 'it\'s && ok' && event.data.id == input.id",
     "event.data.id", "input.id"),
    ('event.data.s == "say \\"a == b\\"" && event.data.id == input.id',
     "event.data.id", "input.id"),
    ("(event.data.a == input.a && event.data.b == 1) && event.data.c == input.c",
     "event.data.c", "input.c"),
    # Triple-quoted and raw strings: a lone quote or a final backslash ends nothing.
    ("event.data.s == '''x ' && y''' && event.data.id == input.id",
     "event.data.id", "input.id"),
    ('event.data.s == """say "a" && b""" && event.data.id == input.id',
     "event.data.id", "input.id"),
    ("event.data.s == '''it''s''' && event.data.id == input.id", "event.data.id",
     "input.id"),
    (r"event.data.p == r'C:\' && event.data.id == input.id", "event.data.id", "input.id"),
    (r"event.data.p == R'a\' && input.id == event.data.id", "event.data.id", "input.id"),
    (r"event.data.b == br'\' && event.data.id == input.id", "event.data.id", "input.id"),
    ('event.data.m["k==v"] == input.k', 'event.data.m["k==v"]', "input.k"),
    ("event.data.ids[0] == input.ids[0]", "event.data.ids[0]", "input.ids[0]"),
    ("size(event.data.items) == size(input.items)",
     "size(event.data.items)", "size(input.items)"),
    ("event.data.total == input.a + results.fee.amount",
     "event.data.total", "input.a + results.fee.amount"),
]


@pytest.mark.parametrize(("source", "event_side", "run_side"), INDEXABLE)
def test_index_key_halves(source: str, event_side: str, run_side: str) -> None:
    spec = compile_match(source)
    assert spec.full is not None
    assert spec.full.source == source  # the whole expression is still what decides
    assert spec.event_side is not None
    assert spec.run_side is not None
    assert (spec.event_side.source, spec.run_side.source) == (event_side, run_side)


UNINDEXABLE = [
    ("event.data.amount >= input.min", "not an equality"),
    ("event.data.id != input.id", "!= is not =="),
    ("event.data.id <= input.id", "<= is not =="),
    ("event.data.a == event.data.b", "both sides read the event"),
    ("input.a == results.b.c", "neither side reads the event"),
    ('event.data.kind == "paid"', "a constant side: nothing of the run to key on"),
    ('"a == b" == event.data.s', "a constant side written first"),
    ("event.data.id == input.id + event.data.suffix", "a side reads both"),
    ("event.data.a == input.a || event.data.b == input.b", "a disjunction"),
    ("event.data.id == input.id || input.test_mode", "== under a top-level ||"),
    ("event.data.id == input.id ? input.strict : false", "== under a ternary"),
    ("!(event.data.id == input.id)", "a negated equality"),
    ("event.data.tags.exists(t, t == input.tag)", "an equality inside a macro"),
    ("event.data.x == input.x == true", "a chain of equalities"),
    ("event.data.flag", "no equality at all"),
    ("event.data.s == ''' && input.id == event.data.id && '''", "an equality in a string"),
    (r"event.data.s == r' && input.id == event.data.id && \'",
     "an equality in a raw string"),
]


@pytest.mark.parametrize(("source", "why"), UNINDEXABLE, ids=[u[1] for u in UNINDEXABLE])
def test_unindexable_expressions_have_no_key_but_still_decide(source: str, why: str) -> None:
    spec = compile_match(source)
    assert spec.full is not None, why
    assert (spec.event_side, spec.run_side) == (None, None), why
    assert spec.run_key({"input": {"id": "o-1"}, "results": {}, "run": {}}) is None
    assert spec.event_key({"event": {"data": {"id": "o-1"}}}) is None


@pytest.mark.parametrize("source", [None, ""])
def test_no_expression_matches_every_event_of_the_type(source: str | None) -> None:
    spec = compile_match(source)
    assert spec == compile_match(None)
    assert spec.full is None
    assert spec.run_key({}) is None
    assert spec.event_key({"event": {}}) is None
    assert spec.matches({"event": {"data": {}}}) is True


def run_scope(**input: Any) -> dict[str, Any]:
    return {"input": input, "results": {"create_run": {"run_id": "r-7"}},
            "run": {"correlation_id": "c-1"}}


def event_scope(**data: Any) -> dict[str, Any]:
    return {"event": {"type": "x.happened", "data": data}}


KEYS = [
    # (expression, run input, event data, run key, event key)
    ("event.data.run_id == results.create_run.run_id", {}, {"run_id": "r-7"},
     '"r-7"', '"r-7"'),
    ("event.data.n == input.n", {"n": 5}, {"n": 5}, "5", "5"),
    ("event.data.ref == input.ref", {"ref": {"b": [1, 2], "a": "x"}},
     {"ref": {"a": "x", "b": [1, 2]}}, '{"a":"x","b":[1,2]}', '{"a":"x","b":[1,2]}'),
    ("event.data.id == input.id", {"id": "é ü"}, {"id": "é ü"}, '"\\u00e9 \\u00fc"',
     '"\\u00e9 \\u00fc"'),
    ("event.data.id == input.id", {"id": None}, {"id": None}, "null", "null"),
    # A number CEL finds equal whatever its JSON form has one key.
    ("event.data.n == input.n", {"n": 1001}, {"n": 1001.0}, "1001", "1001"),
    ("event.data.n == input.n", {"n": [1, 2.0]}, {"n": [1.0, 2]}, "[1,2]", "[1,2]"),
    ("event.data.n == input.n", {"n": {"k": -0.0}}, {"n": {"k": 0}}, '{"k":0}',
     '{"k":0}'),
    ("event.data.n == input.n", {"n": 2.5}, {"n": 2.5}, "2.5", "2.5"),
]


@pytest.mark.parametrize(("source", "inputs", "data", "run_key", "event_key"), KEYS)
def test_keys_are_canonical_json_of_the_sides(source: str, inputs: dict[str, Any],
                                              data: dict[str, Any], run_key: str,
                                              event_key: str) -> None:
    spec = compile_match(source)
    assert spec.run_key(run_scope(**inputs)) == run_key
    assert spec.event_key(event_scope(**data)) == event_key
    assert spec.matches({**run_scope(**inputs), **event_scope(**data)}) is True


def test_missing_fields_give_no_key_and_no_match() -> None:
    spec = compile_match("event.data.order == input.order_id")
    # An event without the field: no key (so it finds only unkeyed awaits) and no match.
    assert spec.event_key(event_scope(other=1)) is None
    assert spec.event_key({"event": {}}) is None
    assert spec.matches({**run_scope(order_id="o-1"), **event_scope(other=1)}) is False
    assert spec.matches({**run_scope(order_id="o-1"), "event": {}}) is False
    # A run without it: its await is stored unkeyed, and nothing matches it.
    assert spec.run_key(run_scope()) is None
    assert spec.matches({**run_scope(), **event_scope(order="o-1")}) is False
    # Present on both sides, the same and different.
    assert spec.matches({**run_scope(order_id="o-1"), **event_scope(order="o-1")}) is True
    assert spec.matches({**run_scope(order_id="o-1"), **event_scope(order="o-2")}) is False


def test_an_expression_that_is_not_boolean_does_not_match() -> None:
    spec = compile_match("event.data.order")
    assert spec.matches(event_scope(order="o-1")) is False  # only `true` resumes a run
    assert spec.matches(event_scope(order=True)) is True


def found_by_index(run_key: str | None, event_key: str | None) -> bool:
    """Whether a store's await lookup by (type, event key) finds an await stored with
    ``run_key`` (unkeyed awaits are seen by every keyed lookup, see ``find_awaits``)."""
    return run_key is None or run_key == event_key


NEVER_HIDDEN = [
    # (expression, run input, event data): the whole expression matches each of them
    ("event.data.order == input.order_id", {"order_id": "o-1"}, {"order": "o-1"}),
    ("event.data.order == input.order_id && event.data.ok", {"order_id": "o-1"},
     {"order": "o-1", "ok": True}),
    ("event.data.id == input.id || input.test_mode", {"id": "o-1", "test_mode": True},
     {"id": "o-9"}),
    ("event.data.id == input.id || input.test_mode", {"id": "o-1", "test_mode": True},
     {}),
    ("event.data.ok == input.ok || input.force", {"ok": True, "force": True},
     {"ok": False}),
    ("event.data.id == input.id ? input.strict : true", {"id": "a", "strict": False},
     {"id": "b"}),
    ("event.data.n == input.n", {"n": 3}, {"n": 3.0}),
    ("event.data.ref == input.ref", {"ref": {"a": 1, "b": 2}}, {"ref": {"b": 2, "a": 1}}),
    ("event.data.n == input.n && event.data.m == input.m", {"n": 1, "m": "x"},
     {"n": 1.0, "m": "x"}),
]


@pytest.mark.parametrize(("source", "inputs", "data"), NEVER_HIDDEN)
def test_the_index_never_hides_a_matching_event(source: str, inputs: dict[str, Any],
                                                data: dict[str, Any]) -> None:
    spec = compile_match(source)
    run, event = run_scope(**inputs), event_scope(**data)
    assert spec.matches({**run, **event}) is True
    assert found_by_index(spec.run_key(run), spec.event_key(event))


def test_a_long_key_is_its_digest_on_both_sides() -> None:
    # An await key is indexed, and an index entry has a size limit on some stores: a long
    # one is kept as its digest, the same for the run and the event.
    spec = compile_match("event.data.id == input.id")
    long = "x" * 5000
    run_key = spec.run_key(run_scope(id=long))
    assert run_key is not None
    assert run_key.startswith("sha256:")
    assert len(run_key) == len("sha256:") + 64
    assert run_key == spec.event_key(event_scope(id=long))
    assert run_key != spec.run_key(run_scope(id=long + "y"))
    assert spec.run_key(run_scope(id="x" * 100)) == '"' + "x" * 100 + '"'  # short: as is
