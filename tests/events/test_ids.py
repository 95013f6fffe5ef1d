"""UUIDv7: layout bits, timestamp, and the order the stores rely on — ids created later
sort later, within one millisecond, across threads and after a fork."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from concordia.ids import is_uuid, new_id, uuid7, uuid7_ms


def test_version_and_variant_bits() -> None:
    for _ in range(100):
        u = uuid7()
        assert u.version == 7
        assert u.variant == uuid.RFC_4122
        assert (u.int >> 76) & 0xF == 7
        assert (u.int >> 62) & 0b11 == 0b10
    assert uuid.UUID(new_id()).version == 7


def test_timestamp_is_unix_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    u = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= uuid7_ms(u) <= after
    assert uuid7_ms("0188cd5e-6f3b-7000-8000-000000000000") == 0x0188CD5E6F3B


def test_ids_sort_in_creation_order_within_one_millisecond() -> None:
    ids = [new_id() for _ in range(50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Many share a millisecond: the order within one is kept too, not only across them.
    per_ms: dict[int, int] = {}
    for i in ids:
        per_ms[uuid7_ms(i)] = per_ms.get(uuid7_ms(i), 0) + 1
    assert max(per_ms.values()) > 100


def test_ids_created_later_in_other_threads_sort_later() -> None:
    # Creation order is the order of appends under the lock, whichever thread made them.
    made: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(5_000):
            with lock:
                made.append(new_id())

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == sorted(made)
    assert len(set(made)) == len(made)


# Run in a fresh interpreter: forking the test process, which has threads of its own,
# is what Python 3.12 warns of.
_FORKS = """
import os
from concordia.ids import new_id
seen = set()
for _ in range(50):
    new_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_id().encode())
        os._exit(0)
    mine = new_id()
    os.waitpid(pid, 0)
    theirs = os.read(read, 64).decode()
    assert theirs != mine and theirs not in seen, (mine, theirs)
    seen.update((mine, theirs))
print(len(seen))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    done = subprocess.run([sys.executable, "-c", _FORKS], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "100"


def test_uuid7_ms_refuses_other_versions() -> None:
    with pytest.raises(ValueError, match="not a UUIDv7"):
        uuid7_ms(uuid.uuid4())


def test_is_uuid() -> None:
    assert is_uuid(new_id())
    assert is_uuid(str(uuid.uuid4()).upper())
    for bad in ("x", "", 42, None, new_id() + "\n", "{" + new_id() + "}",
                "urn:uuid:" + new_id(), new_id().replace("-", "")):
        assert not is_uuid(bad)
