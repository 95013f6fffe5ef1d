"""The one strict JSON parser: what it refuses, and where it says the fault is."""

from __future__ import annotations

import pytest

from concordia.definitions.jsonsafe import JsonLoadError, load_json


def test_it_reads_plain_json_and_ignores_a_byte_order_mark() -> None:
    assert load_json(b'{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    assert load_json("\ufeff{}".encode()) == {}
    assert load_json("\ufeff[]") == []
    assert load_json(b'{"n": 9007199254740991}') == {"n": 2**53 - 1}


@pytest.mark.parametrize(("raw", "reason", "line", "column"), [
    (b'{"type": "a.b.approved",\n "type": "a.b.created"}', "duplicate key 'type'", 0, 0),
    (b'{"outer": {"k": 1, "k": 2}}', "duplicate key 'k'", 0, 0),
    (b'{"x": NaN}', "NaN is not JSON", 0, 0),
    (b'{"x": -Infinity}', "-Infinity is not JSON", 0, 0),
    (b'{"x": 1e400}', "1e400 is too large for a number", 0, 0),
    (b'{"x": 9007199254740992}', "9007199254740992 is beyond what JSON consumers read", 0,
     0),
    (b'{"x": ' + b"9" * 5000 + b"}", "an integer of 5000 digits", 0, 0),
    (b"\xff\xfe{}", "not UTF-8 (byte 0)", 0, 0),
    (b"[" * 100_000, "nested too deeply", 0, 0),
    (b'{\n  "a": 1,\n  oops}', "Expecting property name enclosed in double quotes", 3, 3),
    (b"", "Expecting value", 1, 1),
])
def test_it_refuses_what_json_loads_would_take_or_choke_on(raw: bytes, reason: str,
                                                          line: int, column: int) -> None:
    with pytest.raises(JsonLoadError) as caught:
        load_json(raw)
    assert reason in str(caught.value)
    assert (caught.value.line, caught.value.column) == (line, column)
