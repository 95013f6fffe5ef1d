"""The reference domain's scenarios: each saga on its happy path and failing at every step
(and, for the adapter fan-out, at its first adapter, midway, and after an adapter's change).

A scenario injects a failure into the simulated world (not into the engine), starts the
saga the way production would (a trigger event delivered to the engine), plays the outside
world's part (the Cerebros bridge's completion callback, the passing of time), and then
checks invariants against the world's state and the run's events — never against a log
of calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from concordia import Engine, RunView, new_event
from thunderline.clock import SkippingClock
from thunderline.handlers import FAULT_POINTS
from thunderline.systems.errors import Rejected
from thunderline.world import World

SOURCE = "urn:thunderline:demo"


@dataclass
class Outcome:
    """What one scenario did and which invariants held."""

    saga: str
    failed_at: str
    status: str
    expected: str
    compensations: list[str]
    checks: list[tuple[str, bool]] = field(default_factory=list)
    run_id: str = ""

    @property
    def state_ok(self) -> bool:
        # A failure is fully handled whether or not anything had to be undone.
        if self.expected == "undone":
            return self.status in ("compensated", "failed")
        return self.status == self.expected

    @property
    def ok(self) -> bool:
        return self.state_ok and all(ok for _, ok in self.checks)


@dataclass(frozen=True)
class Scenario:
    saga: str
    failed_at: str  # "-" for the happy path
    expected: str
    # sets the world up and returns the trigger payload
    prepare: Callable[[World], dict[str, Any]]
    # makes the failure happen (world.fail_next) or nothing
    inject: Callable[[World], None] = lambda world: None
    # whether the bridge completes the training (NAS only)
    complete_training: bool = True


class Runner:
    """Runs scenarios on one engine and one world."""

    def __init__(self, engine: Engine, world: World, clock: SkippingClock,
                 send: Callable[[dict[str, Any]], None] | None = None,
                 through_bus: set[str] | None = None) -> None:
        self.engine = engine
        self.world = world
        self.clock = clock
        # How the Cerebros bridge's callback reaches the engine: delivered directly, or
        # ``send`` (published to a bus, consumed back; ``through_bus`` holds what came).
        self.send = send
        self.through_bus = through_bus
        self._counter = 0

    def run(self, scenario: Scenario) -> Outcome:
        self._counter += 1
        world = self.world
        world.clear_failures()
        payload = scenario.prepare(world)
        adapters_before = world.adapter_snapshots()
        scenario.inject(world)
        trigger_type = self.engine.catalog.saga(scenario.saga).trigger
        assert trigger_type is not None
        trigger = new_event(trigger_type.event, payload, source=SOURCE, version=1,
                            correlation_id=f"demo-{self._counter:03d}-{scenario.saga}")
        delivery = self.engine.deliver(trigger)
        [run_id] = delivery.started
        self.engine.run_until_idle()
        view = self.engine.get_run(run_id)
        completion_id = None
        if scenario.saga == "cerebros_nas" and view.status == "suspended":
            model_run = (view.results.get("create_run") or {}).get("run_id")
            if scenario.complete_training and model_run:
                data = world.cerebros.complete_run(model_run)
                done = new_event("ml.training.completed", data, source="urn:cerebros:bridge",
                                 version=1, correlation_id=view.correlation_id)
                completion_id = done.id
                if self.send is not None:
                    self.send(done.to_dict())
                else:
                    self.engine.deliver(done)
                self.engine.run_until_idle()
            else:
                self.clock.advance(6 * 3600 + 1)  # nobody calls back: the timer fires
                self.engine.run_until_idle()
        self.engine.drain(max_wait=3600)
        # The run has ended: no timer of it is pending, so the next run starts stamped
        # with the real time again.
        self.clock.rejoin()
        view = self.engine.get_run(run_id)
        outcome = Outcome(scenario.saga, scenario.failed_at, view.status, scenario.expected,
                          view.compensated_steps(), run_id=run_id)
        self._check(outcome, view, trigger.id, trigger.correlationid or "", adapters_before,
                    completion_id)
        return outcome

    def _check(self, outcome: Outcome, view: RunView, trigger_id: str, correlation: str,
               adapters_before: dict[str, str | None], completion_id: str | None) -> None:
        world = self.world
        checks = outcome.checks
        violations = world.check_invariants()
        checks.append(("world consistent" + (f" ({violations[0].invariant})"
                                             if violations else ""), not violations))
        checks.append(("run compensated what it did", view.status != "compensation_failed"))
        if view.saga == "cerebros_nas":
            model_run = (view.results.get("create_run") or {}).get("run_id") or (
                (view.step("create_run").checkpoint or {}).get("run_id"))
            running = world.running_jobs(model_run) if model_run else []
            checks.append(("no training jobs left running", not running))
        if view.saga == "upm_activation" and view.status != "completed":
            checks.append(("adapters on their previous snapshot",
                           not world.adapters_not_on(adapters_before)))
            # GAP-002: exactly the adapters the run moved, each by its own compensation.
            moved = world.block.synced_by(f"{view.id}:sync_adapters:")
            undone = {f"{view.id}:{name.replace('[', ':').rstrip(']')}"
                      for name in view.compensated_steps() if name.startswith("sync_adapters[")}
            checks.append(("each moved adapter undone by its own compensation",
                           undone == set(moved)))
        if view.saga == "user_provisioning":
            checks.append(("no stray memberships", not world.orphan_memberships()))
            if view.status == "completed" or any(
                    s.name == "send_magic_link" and s.status == "succeeded" for s in view.steps):
                sends = [m for m in world.gate.outbox() if m.to_email == view.input["email"]]
                telemetry = world.gate.telemetry(correlation)
                checks.append(("magic link and its telemetry carry the correlation id",
                               bool(sends) and bool(telemetry) and all(
                                   m.correlation_id == correlation for m in sends)))
        events = view.events
        checks.append(("events carry the trigger's correlation id",
                       all(e.get("correlationid") == correlation for e in events)))
        chains_ok = True
        for e in events:
            chain = self.engine.causation_chain(e["id"])
            root = chain[0]["id"] if chain else None
            if root not in (trigger_id, completion_id):
                chains_ok = False
        checks.append(("causation chains reach the trigger", chains_ok and bool(events)))
        if self.through_bus is not None and completion_id is not None:
            checks.append(("the completion came through JetStream",
                           completion_id in self.through_bus))


def _permanent(operation: str, after: int = 0, skip: int = 0) -> Callable[[World], None]:
    def inject(world: World) -> None:
        world.fail_next(operation, after=after, skip=skip,
                        error=Rejected(operation, "injected failure"))
    return inject


def scenarios(engine: Engine) -> list[Scenario]:
    """Every scenario: each saga's happy path and a failure at each of its steps."""
    catalog = engine.catalog
    out: list[Scenario] = []
    counter = iter(range(1, 10_000))

    def user_input(world: World) -> dict[str, Any]:
        n = next(counter)
        return {"email": f"user{n}@thunderline.example", "display_name": f"User {n}"}

    def upm_input(drift: float) -> Callable[[World], dict[str, Any]]:
        def prepare(world: World) -> dict[str, Any]:
            world.ensure_upm_baseline(adapters=3)
            return {"snapshot_id": world.upm.create_snapshot(drift, shadow_validated=True)}
        return prepare

    def nas_input(world: World) -> dict[str, Any]:
        return {"search_space": "resnet-lite", "trials": 4, "dataset": "cifar-10"}

    prepare: dict[str, Callable[[World], dict[str, Any]]] = {
        "user_provisioning": user_input, "upm_activation": upm_input(0.12),
        "cerebros_nas": nas_input}
    # Multi-item steps fail midway, so compensation must work from the checkpoint.
    midway = {"cerebros.dispatch_training": 2}
    # A fan-out fails at its first item, at a later item before its change, and at an item
    # whose change was made (its reply lost): (label, items passed, after).
    fan_out = [("adapter 1", 0, 0), ("adapter 2 of 3, mid fan-out", 1, 0),
               ("adapter 3, change made, reply lost", 2, 1)]
    for saga_name in ("user_provisioning", "upm_activation", "cerebros_nas"):
        saga = catalog.saga(saga_name)
        out.append(Scenario(saga_name, "-", "completed", prepare[saga_name]))
        for step in saga.steps:
            if step.kind != "action":
                continue
            if step.for_each is not None:
                for where, skip, after in fan_out:
                    out.append(Scenario(saga_name, f"{step.name} ({where})", "undone",
                                        prepare[saga_name],
                                        _permanent(FAULT_POINTS[step.action], after, skip)))
                continue
            after = midway.get(step.action, 0)
            label = step.name + (f" (after {after} items)" if after else "")
            # "compensated" when something was undone, "failed" when nothing had to be.
            out.append(Scenario(saga_name, label, "undone", prepare[saga_name],
                                _permanent(FAULT_POINTS[step.action], after)))
    out.append(Scenario("upm_activation", "policy_check (drift 0.45)", "failed",
                        upm_input(0.45)))
    out.append(Scenario("cerebros_nas", "await_completion (timeout)", "compensated", nas_input,
                        complete_training=False))
    return out
