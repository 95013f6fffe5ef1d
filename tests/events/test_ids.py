"""UUIDv7: layout bits, timestamp, and order within and across milliseconds."""

from __future__ import annotations

import time
import uuid

import pytest

from concordia.ids import UUID7Generator, build_uuid7, is_uuid, new_id, uuid7, uuid7_ms


def test_version_and_variant_bits() -> None:
    for _ in range(100):
        u = uuid7()
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert (u.int >> 76) & 0xF == 7
        assert (u.int >> 62) & 0b11 == 0b10


def test_timestamp_is_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= uuid7_ms(u) <= after
    assert uuid7_ms(str(build_uuid7(1_700_000_000_123, 0))) == 1_700_000_000_123


def test_ids_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_monotonic_within_one_millisecond_and_when_the_clock_steps_back() -> None:
    clock = [2_000_000_000_000]
    generate = UUID7Generator(lambda: clock[0])
    same = [generate() for _ in range(1000)]
    assert same == sorted(same)
    assert len(set(same)) == 1000
    assert {uuid7_ms(u) for u in same} == {2_000_000_000_000}
    clock[0] -= 5_000  # the clock stepped back five seconds
    back = generate()
    assert back > same[-1]
    clock[0] = 2_000_000_000_001
    assert uuid7_ms(generate()) == 2_000_000_000_001


def test_counter_overflow_moves_to_the_next_millisecond() -> None:
    generate = UUID7Generator(lambda: 1_000)
    generate()
    generate._last_rand = (1 << 74) - 1  # force the 74-bit counter to its maximum
    nxt = generate()
    assert uuid7_ms(nxt) == 1_001
    assert nxt.version == 7


def test_uuid7_ms_refuses_other_versions() -> None:
    with pytest.raises(ValueError, match="not a UUIDv7"):
        uuid7_ms(uuid.uuid4())


def test_is_uuid() -> None:
    assert is_uuid(new_id())
    assert is_uuid(str(uuid.uuid4()).upper())
    for bad in ("x", "", 42, None, new_id() + "\n", "{" + new_id() + "}",
                "urn:uuid:" + new_id(), new_id().replace("-", "")):
        assert not is_uuid(bad)
