"""Fault injection on the distributed default: ``concordia worker`` processes sharing a
store, events crossing NATS JetStream, workers SIGKILLed at random, the database and the
bus restarted under load. Afterwards every invariant holds (:func:`check_invariants`):
every run terminal where its plan leads, every completed run holding every step's
result, every compensated run's completed steps compensated exactly once per
idempotency key, no persistent event lost, none published twice under two ids."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.natsutil import delete_stream
from tests.pg import drop_schema
from tests.runtime.workers import stop_all, wait_until
from tests.scale.cluster import Fleet, PaymentService, check_invariants

SAGAS = 500
WORKERS = 3
KILL_EVERY = (0.2, 0.5)  # seconds between SIGKILLs
KILL_FOR = 20.0  # seconds of killing (or until every run ended)
FINISH_WITHIN = 240.0


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(str(request.param), tmp_path)
    try:
        yield made
    finally:
        made.effects.close()
        stop_all(made.workers)
        delete_stream(made.settings)
        if made.schema is not None:
            drop_schema(made.schema)


def finish(fleet: Fleet, payments: PaymentService, count: int, note: str) -> None:
    """Wait until every run ended and the outbox is empty, then stop the workers cleanly."""
    live = [w for w in fleet.workers if w.alive()]
    wait_until(lambda: fleet.ended(count) or not all(w.alive() for w in live),
               FINISH_WITHIN, f"every run ending {note}: {dict(fleet.counts())}",
               interval=0.3)
    wait_until(fleet.outbox_empty, 60, f"the outbox emptying {note}", interval=0.3)
    for worker in live:
        assert worker.alive(), worker.stderr()[-3000:]
        assert worker.terminate() == 0, worker.stderr()[-3000:]
    payments.stop()


@pytest.mark.slow
@pytest.mark.nats
def test_workers_killed_at_random_lose_nothing_and_do_nothing_twice(fleet: Fleet) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    note = f"({fleet.kind}, seed {seed})"
    payments = PaymentService(fleet.settings).start()
    slots = [fleet.start_worker() for _ in range(WORKERS)]
    fleet.place_orders(SAGAS)
    began = time.monotonic()
    kills = 0
    while time.monotonic() - began < KILL_FOR and not fleet.ended(SAGAS):
        time.sleep(rng.uniform(*KILL_EVERY))
        slot = rng.randrange(WORKERS)
        assert slots[slot].alive(), f"a worker died on its own {note}: " + (
            slots[slot].stderr()[-3000:])
        slots[slot].kill()
        kills += 1
        slots[slot] = fleet.start_worker()
    finish(fleet, payments, SAGAS, note)
    took = time.monotonic() - began
    figures = check_invariants(fleet, SAGAS)
    assert kills >= 10, f"only {kills} kills {note}"
    print(f"\n{note}: {SAGAS} sagas, {kills} workers SIGKILLed, {took:.1f}s; {figures}")


def pg_ctl(action: str) -> None:
    cluster = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True,
                             check=True).stdout.split()[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", action],
                   check=True, timeout=120)


def pg_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"],
                          check=False).returncode == 0


@pytest.mark.exclusive
@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.parametrize("fleet", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_database_restart_strands_no_run(fleet: Fleet) -> None:
    count = 200
    payments = PaymentService(fleet.settings).start()
    for _ in range(2):
        fleet.start_worker()
    fleet.place_orders(count)
    wait_until(lambda: sum(fleet.counts().values()) >= count // 4, 60, "runs starting")
    try:
        pg_ctl("restart")  # every connection of every worker is cut
    finally:
        if not pg_up():
            pg_ctl("start")
    wait_until(pg_up, 60, "PostgreSQL accepting connections again")
    finish(fleet, payments, count, "(after a database restart)")
    # The workers felt the restart (their connections were cut), and carried on.
    felt = ("terminating connection", "closed connection", "broken connection",
            "store_unavailable")
    assert any(sign in w.stderr() for w in fleet.workers for sign in felt)
    figures = check_invariants(fleet, count)
    assert figures["statuses"].get("running", 0) == 0
    print(f"\n(postgres restart) {figures}")


def nats_restart() -> None:
    pid = subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True, text=True,
                         check=False).stdout.split()
    for p in pid:
        subprocess.run(["kill", "-TERM", p], check=False)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-x", "nats-server"], capture_output=True,
                         check=False).returncode == 0 and time.monotonic() < deadline:
        time.sleep(0.1)


def nats_start() -> None:
    subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec",
                    "/usr/sbin/nats-server", "--", "-a", "127.0.0.1", "-p", "4222", "-js",
                    "-sd", "/var/lib/nats-server", "-l", "/var/log/nats-server.log"],
                   check=True, timeout=30)


def nats_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.exclusive
@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.postgres
@pytest.mark.parametrize("fleet", [pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_bus_restart_while_events_flow_loses_nothing_and_applies_nothing_twice(
        fleet: Fleet) -> None:
    count = 200
    payments = PaymentService(fleet.settings).start()
    for _ in range(2):
        fleet.start_worker()
    fleet.place_orders(count)
    wait_until(lambda: sum(fleet.counts().values()) >= count // 4, 60, "runs starting")
    try:
        nats_restart()
        time.sleep(2.0)  # runs go on emitting into the outbox meanwhile
    finally:
        nats_start()
    wait_until(nats_up, 30, "NATS accepting connections again")
    finish(fleet, payments, count, "(after a bus restart)")
    # The workers felt the outage (their connections broke and came back).
    assert any('"nats.error"' in w.stderr() for w in fleet.workers)
    figures = check_invariants(fleet, count)
    print(f"\n(nats restart) {figures}")
