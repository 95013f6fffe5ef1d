"""A run is pinned to the definition version it started with."""

from __future__ import annotations

from pathlib import Path

from concordia import Catalog, Engine, Registry, VirtualClock, new_event

EVENTS = """
events:
  - name: shop.order.paid
    version: 1
    payload_schema: {order_id: {type: string, required: true}}
    reliability: persistent
"""

SAGA = """
name: fulfil
version: {version}
steps:
  - name: reserve
    action: shop.reserve
    compensate: shop.release
  - name: paid
    await: shop.order.paid
    match: event.data.order_id == input.order_id
    timeout: 1h
  - name: {last}
    action: shop.{last}
    compensate: none
    reason: last step
"""


def _registry(calls: list[str]) -> Registry:
    registry = Registry()
    registry.add_action("shop.reserve", lambda ctx: calls.append("reserve") or {"ok": True})
    registry.add_compensation("shop.release", lambda ctx: calls.append("release"))
    registry.add_action("shop.ship", lambda ctx: calls.append("ship") or {"v": 1})
    registry.add_action("shop.deliver", lambda ctx: calls.append("deliver") or {"v": 2})
    return registry


def _suspend_on_v1_then_ship_v2(tmp_path: Path, calls: list[str], clock: VirtualClock,
                                order: str) -> tuple[str, str]:
    """A run of version 1 waits for payment; then version 2 replaces version 1's file.

    Returns (run id, store URL): version 1 is now known only to the store.
    """
    (tmp_path / "events.yaml").write_text(EVENTS)
    v1 = tmp_path / "fulfil_v1.yaml"
    v1.write_text(SAGA.format(version=1, last="ship"))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    old = Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store, clock=clock)
    run = old.start("fulfil", {"order_id": order})
    old.run_until_idle()
    old.close()
    v1.unlink()
    (tmp_path / "fulfil_v2.yaml").write_text(SAGA.format(version=2, last="deliver"))
    return run.id, store


def test_run_in_flight_finishes_on_its_own_version(tmp_path: Path) -> None:
    (tmp_path / "events.yaml").write_text(EVENTS)
    (tmp_path / "fulfil_v1.yaml").write_text(SAGA.format(version=1, last="ship"))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    clock = VirtualClock()
    old = Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store, clock=clock)
    first = old.start("fulfil", {"order_id": "o-1"})
    old.run_until_idle()
    assert old.get_run(first.id).status == "suspended"
    old.close()

    # Version 2 is deployed while the first run waits.
    (tmp_path / "fulfil_v2.yaml").write_text(SAGA.format(version=2, last="deliver"))
    new = Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store, clock=clock)
    second = new.start("fulfil", {"order_id": "o-2"})
    assert second.version == 2
    for order in ("o-1", "o-2"):
        new.deliver(new_event("shop.order.paid", {"order_id": order}, source="test",
                              version=1))
    new.run_until_idle()
    one, two = new.get_run(first.id), new.get_run(second.id)
    assert (one.version, one.status, [s.name for s in one.steps]) == (
        1, "completed", ["reserve", "paid", "ship"])
    assert (two.version, two.status, [s.name for s in two.steps]) == (
        2, "completed", ["reserve", "paid", "deliver"])
    assert calls == ["reserve", "ship", "reserve", "deliver"]


def test_a_version_edited_in_place_is_refused(tmp_path: Path) -> None:
    import pytest

    from concordia import DefinitionChangedError

    (tmp_path / "events.yaml").write_text(EVENTS)
    saga_file = tmp_path / "fulfil_v1.yaml"
    saga_file.write_text(SAGA.format(version=1, last="ship"))
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    calls: list[str] = []
    Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store).close()
    saga_file.write_text(SAGA.format(version=1, last="deliver"))  # same version, new step
    with pytest.raises(DefinitionChangedError, match="'fulfil' version 1") as info:
        Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store)
    assert info.value.changed == [("fulfil", 1)]


def test_a_run_outlives_the_yaml_of_its_version(tmp_path: Path) -> None:
    calls: list[str] = []
    clock = VirtualClock()
    run_id, store = _suspend_on_v1_then_ship_v2(tmp_path, calls, clock, "o-7")
    new = Engine(Catalog.load_strict([str(tmp_path)]), _registry(calls), store, clock=clock)
    new.deliver(new_event("shop.order.paid", {"order_id": "o-7"}, source="test", version=1))
    new.run_until_idle()
    view = new.get_run(run_id)
    assert (view.version, view.status) == (1, "completed")
    assert [s.name for s in view.steps] == ["reserve", "paid", "ship"]
    assert calls == ["reserve", "ship"]


def test_a_schema_version_1_store_is_migrated_on_open(tmp_path: Path) -> None:
    import sqlite3

    from concordia.store.sqlite import SqliteStore
    from concordia.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for sql in MIGRATIONS[0][1]:
        assert isinstance(sql, str)
        conn.execute(sql)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(f"sqlite:///{path}")
    assert store.schema_version() == SCHEMA_VERSION == 7
    assert store.pinned_definition("nothing", 1) is None
    store.close()


def test_an_old_version_whose_handler_is_gone_fails_and_compensates(tmp_path: Path) -> None:
    calls: list[str] = []
    clock = VirtualClock()
    run_id, store = _suspend_on_v1_then_ship_v2(tmp_path, calls, clock, "o-8")
    registry = Registry()  # this service no longer binds shop.ship
    registry.add_action("shop.reserve", lambda ctx: {"ok": True})
    registry.add_compensation("shop.release", lambda ctx: calls.append("release"))
    registry.add_action("shop.deliver", lambda ctx: {"v": 2})
    new = Engine(Catalog.load_strict([str(tmp_path)]), registry, store, clock=clock)
    new.deliver(new_event("shop.order.paid", {"order_id": "o-8"}, source="test", version=1))
    new.drain(max_wait=3600)
    view = new.get_run(run_id)
    assert view.status == "compensated"
    assert "no action handler 'shop.ship' is registered" in (view.error or "")
    assert calls == ["reserve", "release"]
