"""Property-based tests: random sagas, random failure points, flaky compensations.

Each example builds a sequential saga of 1 to 12 action steps (some with ``compensate: none``,
some checkpointing before they return), picks at most one step that fails for good
(optionally after checkpointing), makes some actions and compensations fail transiently
fewer times than their retry policy allows, runs it on a virtual clock and checks the
journal against what the handlers observed.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError
from concordia.machine.compile import TERMINAL
from concordia.registry import Registry
from concordia.testing import Faults, Harness
from tests.runtime.sagas import action, load_catalog, saga

ATTEMPTS = 3  # for actions and compensations alike; flaky handlers fail fewer times


@dataclass(frozen=True)
class StepSpec:
    name: str
    compensated: bool  # has a compensation handler (else `compensate: none`)
    checkpoints: bool  # calls ctx.checkpoint before returning (or before failing)
    flaky: int  # transient failures of the action before it succeeds (< ATTEMPTS)
    flaky_compensation: int  # transient failures of the compensation (< ATTEMPTS)


@dataclass(frozen=True)
class SagaSpec:
    steps: tuple[StepSpec, ...]
    failing: int | None  # index of the step that fails for good
    fail_after_checkpoint: bool  # the failing step checkpoints, then fails

    @property
    def shape(self) -> tuple[bool, ...]:
        return tuple(s.compensated for s in self.steps)


@st.composite
def saga_specs(draw: st.DrawFn) -> SagaSpec:
    n = draw(st.integers(1, 12))
    steps = tuple(
        StepSpec(name=f"s{i}", compensated=draw(st.booleans() | st.just(True)),
                 checkpoints=draw(st.booleans()), flaky=draw(st.integers(0, ATTEMPTS - 1)),
                 flaky_compensation=draw(st.integers(0, ATTEMPTS - 1)))
        for i in range(n))
    failing = draw(st.none() | st.integers(0, n - 1))
    return SagaSpec(steps, failing, draw(st.booleans()))


@functools.cache
def catalog_for(shape: tuple[bool, ...]) -> Catalog:
    retry = {"attempts": ATTEMPTS, "backoff": {"initial": "1s", "factor": 2, "jitter": 0.5}}
    steps = [action(f"s{i}", compensate="auto" if has else None, retry=retry,
                    compensation_retry=retry) for i, has in enumerate(shape)]
    return load_catalog(saga("prop", steps))


def result_of(ctx: Any) -> dict[str, Any]:
    return {"step": ctx.step, "key": ctx.idempotency_key}


def checkpoint_of(step: str) -> dict[str, Any]:
    return {"partial": step, "items": [1, 2, 3]}


def build(spec: SagaSpec) -> tuple[Registry, Faults, list[dict[str, Any]]]:
    """Handlers that record what they saw, and the failure plan for them."""
    registry = Registry()
    seen: list[dict[str, Any]] = []
    faults = Faults()
    for i, step in enumerate(spec.steps):
        failing = spec.failing == i

        def act(ctx: Any, step: StepSpec = step, failing: bool = failing) -> Any:
            entry: dict[str, Any] = {"phase": "action", "step": ctx.step,
                                     "attempt": ctx.attempt, "key": ctx.idempotency_key}
            seen.append(entry)
            if step.checkpoints or (failing and spec.fail_after_checkpoint):
                ctx.checkpoint(checkpoint_of(ctx.step))
                entry["checkpointed"] = True
            result = result_of(ctx)
            entry["returned"] = result
            return result

        def undo(ctx: Any) -> None:
            seen.append({"phase": "compensation", "step": ctx.step, "attempt": ctx.attempt,
                         "key": ctx.idempotency_key, "result": ctx.result,
                         "completed": ctx.completed})

        registry.add_action(f"{step.name}.do", act)
        if step.compensated:
            registry.add_compensation(f"{step.name}.undo", undo)
        if failing:
            # Permanent: retrying cannot help. "after" lets the handler run (and maybe
            # checkpoint) first; "before" fails it before it does anything.
            faults.fail(step.name, when="after" if spec.fail_after_checkpoint else "before",
                        error=functools.partial(PermanentError, f"{step.name} refused"))
        elif step.flaky:
            faults.fail(step.name, attempts=range(1, step.flaky + 1))
        if step.flaky_compensation:
            faults.fail(step.name, attempts=range(1, step.flaky_compensation + 1),
                        compensation=True)
    return registry, faults, seen


def expected_compensations(spec: SagaSpec) -> list[str]:
    """The steps that may have changed the world and can be undone, newest first."""
    if spec.failing is None:
        return []
    with_effect = list(spec.steps[: spec.failing])
    if spec.fail_after_checkpoint:  # the failing step ran and checkpointed before failing
        with_effect.append(spec.steps[spec.failing])
    return [s.name for s in reversed(with_effect) if s.compensated]


def failed_before_handler(spec: SagaSpec, call: tuple[str, str, int]) -> bool:
    """Whether the fault plan stops this call before the handler itself runs."""
    phase, name, attempt = call
    index = int(name[1:])
    step = spec.steps[index]
    if phase == "compensation":
        return attempt <= step.flaky_compensation
    if index == spec.failing:
        return not spec.fail_after_checkpoint
    return attempt <= step.flaky


def check(spec: SagaSpec, store_url: str) -> None:
    registry, faults, seen = build(spec)
    harness = Harness(catalog_for(spec.shape), registry, faults=faults, store=store_url)
    try:
        view = harness.run("prop", {})
        history = view.history
    finally:
        harness.engine.close()
    names = [s.name for s in spec.steps]
    by_name = {s.name: s for s in spec.steps}

    # -- exactly one terminal state, consistent with what happened --------------------------
    comps = expected_compensations(spec)
    expected_status = ("completed" if spec.failing is None
                       else "compensated" if comps else "failed")
    assert view.status == expected_status
    assert view.state == expected_status
    assert view.status in TERMINAL
    ends = [h.kind for h in history if h.kind in {f"run.{t}" for t in TERMINAL}
            | {"run.compensation_failed"}]
    assert ends == [f"run.{expected_status}"]
    assert history[-1].kind == ends[0]
    assert view.wake_at is None

    # -- actions: each step up to the failing one, retried exactly as often as it flaked ---
    last = len(names) if spec.failing is None else spec.failing + 1
    expected_calls: list[tuple[str, str, int]] = []
    for s in spec.steps[:last]:
        tries = 1 if spec.failing is not None and s.name == names[spec.failing] else (
            s.flaky + 1)
        expected_calls += [("action", s.name, a) for a in range(1, tries + 1)]
    # -- compensations: exactly the completed-or-checkpointed steps that have one, reversed -
    for name in comps:
        expected_calls += [("compensation", name, a)
                           for a in range(1, by_name[name].flaky_compensation + 2)]
    assert harness.log.calls == expected_calls
    assert view.compensated_steps() == comps

    # Handlers behind the fault wrapper saw the same calls, minus those failed "before".
    reached = [(e["phase"], e["step"], e["attempt"]) for e in seen]
    assert reached == [c for c in expected_calls if not failed_before_handler(spec, c)]

    # -- the store's history equals what the handlers observed -----------------------------
    started = [("action" if h.kind == "step.started" else "compensation", h.step, h.attempt)
               for h in history if h.kind in ("step.started", "compensation.started")]
    assert started == harness.log.calls
    succeeded = [(h.step, h.attempt, h.detail["result"]) for h in history
                 if h.kind == "step.succeeded"]
    failing_name = None if spec.failing is None else names[spec.failing]
    returned = [(e["step"], e["attempt"], e["returned"]) for e in seen
                if e["phase"] == "action" and e["step"] != failing_name]
    assert succeeded == returned
    checkpoints = [(h.step, h.attempt, h.detail["data"]) for h in history
                   if h.kind == "step.checkpoint"]
    assert checkpoints == [(e["step"], e["attempt"], checkpoint_of(e["step"])) for e in seen
                           if e.get("checkpointed")]
    retries = [(h.step, h.attempt) for h in history if h.kind == "step.retry_scheduled"]
    assert retries == [(c[1], c[2]) for c in expected_calls
                       if c[0] == "action" and c[2] <= by_name[c[1]].flaky
                       and names.index(c[1]) != spec.failing]
    comp_retries = [(h.step, h.attempt) for h in history
                    if h.kind == "compensation.retry_scheduled"]
    assert comp_retries == [(c[1], c[2]) for c in expected_calls
                            if c[0] == "compensation"
                            and c[2] <= by_name[c[1]].flaky_compensation]

    # -- step records ----------------------------------------------------------------------
    for i, s in enumerate(spec.steps):
        rec = view.step(s.name)
        if i < last and i != spec.failing:
            assert rec.status == "succeeded"
            assert rec.result == {"step": s.name, "key": f"{view.id}:{s.name}"}
            assert rec.attempt == s.flaky + 1
        elif i == spec.failing:
            assert rec.status == "failed"
            assert rec.result is None
            assert rec.error == f"PermanentError: {s.name} refused"
        else:
            assert (rec.status, rec.attempt) == ("pending", 0)
        assert rec.comp_status == ("succeeded" if s.name in comps else None)
        if s.name in comps:
            assert rec.comp_attempt == s.flaky_compensation + 1

    # -- what each compensation received: the journaled result, or the checkpoint ----------
    for e in seen:
        assert e["key"] == f"{view.id}:{e['step']}" + (
            ":compensate" if e["phase"] == "compensation" else "")
        if e["phase"] != "compensation":
            continue
        if e["step"] == failing_name:
            assert e["completed"] is False
            assert e["result"] == checkpoint_of(e["step"])
        else:
            assert e["completed"] is True
            assert e["result"] == view.step(e["step"]).result


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(saga_specs())
def test_random_sagas_on_the_memory_store(spec: SagaSpec) -> None:
    check(spec, "memory://")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(saga_specs())
def test_random_sagas_on_the_sqlite_store(spec: SagaSpec) -> None:
    with tempfile.TemporaryDirectory(prefix="concordia-prop-") as tmp:
        check(spec, f"sqlite:///{tmp}/runs.db")
