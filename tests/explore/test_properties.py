"""Each property ``prove`` checks: a saga that breaks it and one that keeps it, and every
counterexample minimal (no fault of it can be dropped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concordia.definitions.catalog import Catalog
from concordia.definitions.models import ActionStep, AwaitStep, Saga
from concordia.explore import Bounds, Property, Workbench
from concordia.explore.model import Exploration
from concordia.explore.properties import deadline_violations
from concordia.runtime import stage_plan
from concordia.runtime.kinds import actions
from tests.explore.conftest import CORPUS, tree


def explored(tmp_path: Path, text: str, faults: int = 1) -> Exploration:
    name = text.split("name: ", 1)[1].split("\n", 1)[0]
    catalog = tree(tmp_path, {name: text})
    return Workbench(catalog).explorer(catalog.saga(name), Bounds(faults=faults)).explore()


def broken(ex: Exploration) -> set[str]:
    return {str(v.property) for v, _ in ex.counterexamples} | {str(v.property)
                                                                 for v in ex.static}


TWO_STEPS = """\
name: two
version: 1
steps:
  - name: reserve
    action: x.reserve
    compensate: x.release
    checkpoints: true
  - name: charge
    action: x.charge
    compensate: x.refund{checkpoints}
"""


def test_leftovers_an_effect_the_journal_never_learned_of(tmp_path: Path) -> None:
    ex = explored(tmp_path, TWO_STEPS.format(checkpoints=""))
    [(violation, path)] = ex.counterexamples
    assert violation.property == Property.LEFTOVERS
    assert violation.step == "charge"
    assert [c.describe() for c in path.faults] == [
        "charge#1: fails after its effect (UnexpectedError)"]
    assert path.compensations == ["reserve"]
    assert "checkpoint before the effect" in violation.hint


def test_leftovers_a_checkpointing_step_is_compensated(tmp_path: Path) -> None:
    ex = explored(tmp_path, TWO_STEPS.format(checkpoints="\n    checkpoints: true"))
    assert broken(ex) == set()
    after = [p for p in ex.paths if p.faults and p.faults[0].option.after
             and p.faults[0].point.step == "charge"]
    assert [p.compensations for p in after] == [["charge", "reserve"]]


def test_leftovers_declared_ones_are_accepted(tmp_path: Path) -> None:
    ex = explored(tmp_path, """\
    name: declared
    version: 1
    steps:
      - name: notify
        action: x.notify
        compensate: none
        reason: a notice cannot be unsent
      - name: charge
        action: x.charge
        compensate: x.refund
        checkpoints: true
    """)
    assert broken(ex) == set()
    kinds = {lo.kind for p in ex.paths for lo in p.leftovers}
    assert {str(k) for k in kinds} == {"declared"}


def test_leftovers_a_halted_run_is_visible(tmp_path: Path) -> None:
    ex = explored(tmp_path, TWO_STEPS.format(checkpoints="\n    checkpoints: true"), 2)
    halted = [p for p in ex.paths if p.status == "compensation_failed"]
    assert halted
    assert broken(ex) == set()
    assert all(str(lo.kind) == "halted" for p in halted for lo in p.leftovers)


FAN = """\
name: fan
version: 1
input_schema:
  items: {type: list, required: true}
steps:
  - name: sync
    action: x.sync
    compensate: x.restore
    checkpoints: true
    for_each: input.items
  - name: finish
    action: x.finish
    compensate: none
    reason: the last step
"""


def test_order_holds_on_the_engine(tmp_path: Path) -> None:
    ex = explored(tmp_path, FAN)
    assert Property.ORDER not in {v.property for v, _ in ex.counterexamples}
    undone = [p.compensations for p in ex.paths if p.status == "compensated"]
    assert ["sync[2]", "sync[1]", "sync[0]"] in undone


def test_order_a_planner_undoing_in_list_order_is_caught(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A change to the engine changes what the explorer says: it runs the planner as it is.
    monkeypatch.setattr(stage_plan, "reversed", iter, raising=False)
    ex = explored(tmp_path, FAN)
    orders = [(v, p) for v, p in ex.counterexamples if v.property == Property.ORDER]
    assert orders
    violation, path = orders[0]
    assert "sync[1] is compensated after sync[0]" in violation.message
    assert path.compensations[:2] == ["sync[0]", "sync[1]"]


def test_order_a_compensation_run_twice_is_caught(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    succeeded = actions.compensation_succeeded

    def forgets_once(run, rec, pending, now):  # type: ignore[no-untyped-def]
        succeeded(run, rec, pending, now)
        if rec.comp_attempt == 1:
            rec.comp_status = None  # the journal forgets it: the planner undoes again

    monkeypatch.setattr(actions, "compensation_succeeded", forgets_once)
    ex = explored(tmp_path, TWO_STEPS.format(checkpoints="\n    checkpoints: true"))
    assert any(v.property == Property.ORDER and "twice" in v.message
               for v, _ in ex.counterexamples)


MAX = """\
name: bounded
version: 1
max_duration: {limit}
defaults:
  timeout: 30s
  retry: {{attempts: 3, backoff: {{initial: 10s, max: 10s, jitter: 0}}}}
steps:
  - name: book
    action: x.book
    compensate: x.unbook
    checkpoints: true
"""


def test_termination_over_max_duration(tmp_path: Path) -> None:
    ex = explored(tmp_path, MAX.format(limit="1m"))
    [(violation, path)] = ex.counterexamples
    assert violation.property == Property.TERMINATION
    # The shortest path past the limit: an attempt of 30s, its retry's 10s, another 30s.
    assert path.duration == pytest.approx(70.0)
    # The longest: 3 attempts of 30s, 2 waits of 10s, the compensation's 30s.
    assert ex.worst_duration == pytest.approx(140.0)


def test_termination_within_max_duration(tmp_path: Path) -> None:
    ex = explored(tmp_path, MAX.format(limit="3m"))
    assert broken(ex) == set()


WAIT = """\
name: waiting
version: 1
max_duration: 2h
steps:
  - name: start
    action: x.start
    compensate: x.stop
    checkpoints: true
  - name: wait
    await: t.job.done
    timeout: {timeout}
"""


def test_termination_an_await_without_deadline_is_unbounded(tmp_path: Path) -> None:
    ex = explored(tmp_path, WAIT.format(timeout="none"))
    assert Property.TERMINATION in {v.property for v, _ in ex.counterexamples}
    forever = [p for p in ex.paths if p.status == "waits_forever"]
    assert forever
    assert forever[0].leftovers == ()  # a run waiting on purpose left nothing behind
    assert ex.worst_duration == float("inf")


def test_termination_an_await_with_deadline_is_bounded(tmp_path: Path) -> None:
    ex = explored(tmp_path, WAIT.format(timeout="1h"))
    assert broken(ex) == set()
    # start (60s, the engine's default timeout) then the event at the deadline, then the
    # compensation of start after a timeout (60s).
    assert ex.worst_duration == pytest.approx(60 + 3600 + 60)


def test_deadlines_an_await_that_says_nothing_breaks_it() -> None:
    silent = AwaitStep(name="wait", event="t.job.done")
    said = AwaitStep(name="wait", event="t.job.done", timeout_none=True)
    timed = AwaitStep(name="wait", event="t.job.done", timeout=60.0)
    start = ActionStep(name="start", action="x.start", compensate="x.stop")
    assert [v.step for v in deadline_violations(Saga(name="s", version=1,
                                                     steps=(start, silent)))] == ["wait"]
    for step in (said, timed):
        assert deadline_violations(Saga(name="s", version=1, steps=(start, step))) == []


READ = """\
name: reads
version: 1
input_schema:
  express: {{type: boolean, required: true}}
steps:
  - name: quote
    action: x.quote
    compensate: none
    reason: read-only
    if: input.express
  - name: send
    action: x.send
    compensate: none
    reason: a message
    emit:
      - event: t.note.made
        payload:
          text: {read}
"""


def test_references_a_read_of_a_skipped_result(tmp_path: Path) -> None:
    ex = explored(tmp_path, READ.format(read="results.quote.text"))
    [(violation, path)] = ex.counterexamples
    assert violation.property == Property.REFERENCES
    assert violation.step == "send"
    assert path.faults == ()
    assert [c.describe() for c in path.choices if c.point.kind == "if"] == [
        "if quote: false"]
    assert path.status == "failed"  # the emit fails, as evaluating it would


def test_references_a_guarded_read(tmp_path: Path) -> None:
    ex = explored(tmp_path, READ.format(
        read='"has(results.quote) ? results.quote.text : \'none\'"'))
    assert broken(ex) == set()


def test_references_an_event_outside_the_taxonomy(tmp_path: Path) -> None:
    # validate refuses it; the explorer, given such a tree anyway, reports it on its path.
    text = READ.format(read="input.express").replace("t.note.made", "t.nowhere.made")
    paths = tree_paths(tmp_path, {"reads": text})
    catalog = Catalog.load(paths)
    assert [p.code for p in catalog.errors] == ["unknown-event"]
    ex = Workbench(catalog).explorer(catalog.saga("reads"), Bounds()).explore()
    assert any("not in the taxonomy" in v.message for v, _ in ex.counterexamples)


def tree_paths(root: Path, sagas: dict[str, str]) -> list[str]:
    from tests.explore.conftest import write_tree

    return write_tree(root, sagas)


# -- minimal counterexamples -------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus() -> tuple[Workbench, list[Exploration]]:
    catalog = Catalog.load_strict([str(CORPUS / "definitions"), str(CORPUS / "policies")])
    bench = Workbench(catalog)
    return bench, [bench.explorer(s, Bounds(faults=2)).explore()
                   for s in catalog.sagas.values()]


def test_every_counterexample_is_minimal(corpus: tuple[Workbench, list[Exploration]]) -> None:
    bench, explorations = corpus
    checked = 0
    for ex in explorations:
        explorer = bench.explorer(bench.catalog.saga(ex.saga), ex.bounds)
        for violation, path in ex.counterexamples:
            key = (str(violation.property), violation.subject)
            for fault in path.faults:
                again = explorer.replay([c for c in path.choices if c is not fault])
                assert key not in {(str(v.property), v.subject) for v in again.violations}, (
                    f"{ex.saga}: {violation.message} holds without {fault.describe()}")
                checked += 1
            # And the counterexample replays to the same breach.
            replayed = explorer.replay(path.choices)
            assert key in {(str(v.property), v.subject) for v in replayed.violations}
    assert checked > 0


def test_a_counterexample_has_the_fewest_faults(
        corpus: tuple[Workbench, list[Exploration]]) -> None:
    _, explorations = corpus
    for ex in explorations:
        for violation, path in ex.counterexamples:
            key = (str(violation.property), violation.subject)
            fewest = min(len(p.faults) for p in ex.complete_paths
                         if key in {(str(v.property), v.subject) for v in p.violations})
            assert len(path.faults) == fewest
