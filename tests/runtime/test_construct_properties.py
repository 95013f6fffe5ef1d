"""Property-based tests of the language's constructs, against what the handlers observed.

- Random skip conditions: a skipped step never runs and is never compensated; exactly the
  steps that ran before a failure (and can be undone) are compensated, in reverse.
- Random catch tables: a step's error is caught exactly when an entry matches it (by class
  or base class name, or ``*``); a caught error jumps where the entry says, skipping the
  steps between, and compensates nothing; an uncaught one compensates what ran.
- Random per-item failures in a fan-out (transient and permanent, with and without a
  checkpoint, any concurrency, both modes): exactly the items that completed or
  checkpointed are compensated, once each, in reverse order.

Runs on the in-memory store with a virtual clock (retry timers fire without sleeping);
a smaller number of fan-out examples also run on SQLite.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordia.clock import VirtualClock
from concordia.errors import PermanentError
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from tests.runtime.sagas import action, load_catalog, saga

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _run(catalog: Any, registry: Registry, data: dict[str, Any], store: str = "memory://"
         ) -> Any:
    [(name, _)] = catalog.sagas
    with Engine(catalog, registry, store, clock=VirtualClock()) as engine:
        run = engine.start(name, data)
        engine.drain(max_wait=10**6)
        return engine.get_run(run.id)


# -- conditions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CondStep:
    conditional: bool
    holds: bool
    compensated: bool


@st.composite
def condition_plans(draw: st.DrawFn) -> tuple[tuple[CondStep, ...], int | None]:
    steps = tuple(CondStep(draw(st.booleans()), draw(st.booleans()), draw(st.booleans()))
                  for _ in range(draw(st.integers(1, 8))))
    return steps, draw(st.none() | st.integers(0, len(steps) - 1))


@SETTINGS
@given(condition_plans())
def test_random_skip_conditions(plan: tuple[tuple[CondStep, ...], int | None]) -> None:
    steps, failing = plan
    calls: list[tuple[str, str]] = []
    registry = Registry()
    defs = []
    for i, spec in enumerate(steps):
        name = f"s{i}"
        extra = {"if": f"input.{name}"} if spec.conditional else {}
        defs.append(action(name, compensate="auto" if spec.compensated else None, **extra))

        def act(ctx: Any, i: int = i) -> Any:
            calls.append(("action", ctx.step))
            if i == failing:
                raise PermanentError("refused")
            return {"step": ctx.step}

        registry.add_action(f"{name}.do", act)
        if spec.compensated:
            registry.add_compensation(f"{name}.undo",
                                      lambda ctx: calls.append(("undo", ctx.step)))
    catalog = load_catalog(saga("cond", defs))
    view = _run(catalog, registry, {f"s{i}": s.holds for i, s in enumerate(steps)})

    runs = [not s.conditional or s.holds for s in steps]
    fails_at = failing if failing is not None and runs[failing] else None
    last = len(steps) if fails_at is None else fails_at + 1
    ran = [f"s{i}" for i in range(last) if runs[i]]
    undone = [f"s{i}" for i in reversed(range(last)) if runs[i] and i != fails_at
              and steps[i].compensated] if fails_at is not None else []
    assert calls == [("action", n) for n in ran] + [("undo", n) for n in undone]
    expected = ("completed" if fails_at is None else "compensated" if undone else "failed")
    assert view.status == expected
    for i in range(last):
        rec = view.step(f"s{i}")
        if not runs[i]:
            assert (rec.status, rec.attempt, rec.comp_status) == ("skipped", 0, None)


# -- catch tables -------------------------------------------------------------------------


class ErrorA(Exception):
    pass


class ErrorB(ErrorA):
    pass


class ErrorC(Exception):
    pass


ERRORS = {"A": ErrorA, "B": ErrorB, "C": ErrorC}
MATCHES = {"A": {"A", "*"}, "B": {"A", "B", "*"}, "C": {"C", "*"}}


@dataclass(frozen=True)
class CatchStep:
    raises: str | None  # A, B, C or None
    table: tuple[tuple[frozenset[str], int | None], ...]  # (errors, goto index or None)


@st.composite
def catch_plans(draw: st.DrawFn) -> tuple[CatchStep, ...]:
    n = draw(st.integers(1, 6))
    out = []
    for i in range(n):
        entries = []
        for _ in range(draw(st.integers(0, 2))):
            errors = frozenset(draw(st.sets(st.sampled_from(["A", "B", "C", "*"]),
                                            min_size=1, max_size=2)))
            goto = draw(st.none() | st.integers(i + 1, n)) if i + 1 < n else None
            entries.append((errors, goto if goto is not None and goto < n else None))
        out.append(CatchStep(draw(st.none() | st.sampled_from(["A", "B", "C"])),
                             tuple(entries)))
    return tuple(out)


@SETTINGS
@given(catch_plans())
def test_random_catch_tables(plan: tuple[CatchStep, ...]) -> None:
    calls: list[tuple[str, str]] = []
    registry = Registry()
    defs = []
    for i, spec in enumerate(plan):
        name = f"s{i}"
        catch = [{"errors": sorted(e if e == "*" else f"Error{e}" for e in errors),
                  "goto": f"s{goto}" if goto is not None else "continue"}
                 for errors, goto in spec.table]
        defs.append(action(name, **({"catch": catch} if catch else {})))

        def act(ctx: Any, spec: CatchStep = spec) -> Any:
            calls.append(("action", ctx.step))
            if spec.raises is not None:
                raise ERRORS[spec.raises](f"{ctx.step} raised {spec.raises}")
            return {"step": ctx.step}

        registry.add_action(f"{name}.do", act)
        registry.add_compensation(f"{name}.undo", lambda ctx: calls.append(("undo", ctx.step)))
    view = _run(load_catalog(saga("catchy", defs)), registry, {})

    # What the table says should happen, step by step.
    expected: list[tuple[str, str]] = []
    status: dict[str, str] = {}
    i, failed = 0, False
    while i < len(plan):
        spec = plan[i]
        expected.append(("action", f"s{i}"))
        if spec.raises is None:
            status[f"s{i}"] = "succeeded"
            i += 1
            continue
        entry = next((k for k, (errors, _) in enumerate(spec.table)
                      if errors & MATCHES[spec.raises]), None)
        if entry is None:
            status[f"s{i}"] = "failed"
            failed = True
            break
        status[f"s{i}"] = "caught"
        goto = spec.table[entry][1]
        for j in range(i + 1, goto if goto is not None else i + 1):
            status[f"s{j}"] = "skipped"
        i = goto if goto is not None else i + 1
    undone = [n for n in reversed(list(status)) if status[n] == "succeeded"] if failed else []
    expected += [("undo", n) for n in undone]
    assert calls == expected
    assert view.status == ("completed" if not failed else "compensated" if undone
                           else "failed")
    for name, want in status.items():
        assert view.step(name).status == want, name
        if want == "caught":
            error = view.results[name]["error"]
            assert error["type"] in ("ErrorA", "ErrorB", "ErrorC")
            assert error["message"] == f"{name} raised {error['type'][-1]}"


# -- per-item failures in a fan-out -------------------------------------------------------


@dataclass(frozen=True)
class ItemPlan:
    flaky: int  # transient failures before it goes on (fewer than the 3 attempts)
    outcome: str  # "ok", "fail" (permanent, before any effect) or "fail_after_checkpoint"
    flaky_undo: int  # transient failures of its compensation


@dataclass(frozen=True)
class FanOutPlan:
    items: tuple[ItemPlan, ...]
    concurrency: int
    mode: str
    later_fails: bool  # the step after the fan-out fails for good


@st.composite
def fan_out_plans(draw: st.DrawFn) -> FanOutPlan:
    items = tuple(ItemPlan(draw(st.integers(0, 2)),
                           draw(st.sampled_from(["ok", "ok", "ok", "fail",
                                                 "fail_after_checkpoint"])),
                           draw(st.integers(0, 2)))
                  for _ in range(draw(st.integers(0, 10))))
    return FanOutPlan(items, draw(st.integers(1, 4)), draw(st.sampled_from(["all",
                                                                            "best_effort"])),
                      draw(st.booleans()))


def check_fan_out(plan: FanOutPlan, store: str) -> None:
    log: list[dict[str, Any]] = []
    registry = Registry()

    def sync(ctx: Any) -> Any:
        item = plan.items[ctx.index]
        entry = {"phase": "action", "index": ctx.index, "attempt": ctx.attempt,
                 "key": ctx.idempotency_key}
        log.append(entry)
        if ctx.attempt <= item.flaky:
            raise ConnectionError("transient")
        if item.outcome == "fail":
            raise PermanentError(f"item {ctx.index} refused")
        if item.outcome == "fail_after_checkpoint":
            ctx.checkpoint({"partial": ctx.index})
            entry["checkpointed"] = True
            raise PermanentError(f"item {ctx.index} broke midway")
        entry["completed"] = True
        return {"done": ctx.index}

    def restore(ctx: Any) -> None:
        entry = {"phase": "undo", "index": ctx.index, "attempt": ctx.attempt,
                 "result": ctx.result, "key": ctx.idempotency_key}
        log.append(entry)
        if ctx.attempt <= plan.items[ctx.index].flaky_undo:
            raise ConnectionError("transient undo")
        entry["undone"] = True

    def later(ctx: Any) -> Any:
        if plan.later_fails:
            raise PermanentError("later step refused")
        return {"later": True}

    registry.add_action("items.do", sync)
    registry.add_compensation("items.undo", restore)
    registry.add_action("later.do", later)
    registry.add_compensation("later.undo", lambda ctx: None)
    retry = {"attempts": 3, "backoff": {"initial": "1s", "jitter": 0.5}}
    catalog = load_catalog(saga("fan", [
        action("items", for_each="input.items", concurrency=plan.concurrency,
               mode=plan.mode, retry=retry, compensation_retry=retry),
        action("later"),
    ]))
    view = _run(catalog, registry, {"items": list(range(len(plan.items)))}, store)

    actions = [e for e in log if e["phase"] == "action"]
    completed = {e["index"] for e in actions if e.get("completed")}
    checkpointed = {e["index"] for e in actions if e.get("checkpointed")}
    with_effect = completed | checkpointed
    undone = [e["index"] for e in log if e.get("undone")]
    permanent = [i for i, item in enumerate(plan.items) if item.outcome != "ok"]

    step_fails = plan.mode == "all" and bool(permanent)
    # In best_effort an item that failed for good after checkpointing is undone on its
    # own, when it fails; nothing else is undone unless the run compensates.
    alone = checkpointed & set(permanent) if plan.mode == "best_effort" else set()
    assert set(undone[:len(alone)]) == alone
    rest = undone[len(alone):]
    if step_fails or plan.later_fails:
        # Exactly the items that completed or checkpointed, once each, last first.
        assert rest == sorted(with_effect - alone, reverse=True)
        assert view.status == ("compensated" if undone else "failed")
    else:
        assert rest == []
        assert view.status == "completed"
    assert len(undone) == len(set(undone))  # once each
    tries = {i: [e["attempt"] for e in actions if e["index"] == i]
             for i in range(len(plan.items))}
    if step_fails:
        failed_for_good = [i for i in permanent
                           if len(tries[i]) == plan.items[i].flaky + 1]
        assert view.step("items").status == "failed"
        assert (view.step("items").error or "").startswith(f"item {min(failed_for_good)}:")
    # Attempts per item: transient failures, then one more; fewer only when the step
    # failed (an item waiting on its retry is abandoned) -- never more, never a gap.
    for i, item in enumerate(plan.items):
        assert tries[i] == list(range(1, len(tries[i]) + 1))
        assert len(tries[i]) <= item.flaky + 1
        if not step_fails:
            assert len(tries[i]) == item.flaky + 1
    # Each item's calls carried its own key, the same on every attempt.
    for e in log:
        suffix = ":compensate" if e["phase"] == "undo" else ""
        assert e["key"] == f"{view.id}:items:{e['index']}{suffix}"
    # Each compensation got its item's own result, or its checkpoint.
    for e in log:
        if e["phase"] == "undo":
            assert e["result"] == ({"done": e["index"]} if e["index"] in completed
                                   else {"partial": e["index"]})


@SETTINGS
@given(fan_out_plans())
def test_random_per_item_failures_on_the_memory_store(plan: FanOutPlan) -> None:
    check_fan_out(plan, "memory://")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fan_out_plans())
def test_random_per_item_failures_on_the_sqlite_store(plan: FanOutPlan) -> None:
    with tempfile.TemporaryDirectory(prefix="concordia-fan-") as tmp:
        check_fan_out(plan, f"sqlite:///{tmp}/runs.db")
