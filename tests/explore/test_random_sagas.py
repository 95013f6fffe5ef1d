"""Random sagas — actions, fan-outs (both modes), awaits, policies, child sagas,
conditions, catch tables, parallel stages, one or two faults a path — whose every
explored path runs on the engine exactly as the explorer predicted, under the same
faults."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concordia.definitions.catalog import Catalog
from concordia.explore import Bounds
from concordia.runtime.views import RunView
from concordia.testing import explore
from tests.explore.conftest import plain_registry, write_tree

INPUT = {"flag": True, "amount": 5, "items": ["a", "b", "c"], "job": "j-1"}


@st.composite
def steps(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 5))
    out: list[dict[str, Any]] = []
    for i in range(count):
        name = f"s{i}"
        kind = draw(st.sampled_from(["action", "action", "fan", "await", "policy", "child"]))
        if kind == "child":
            step = {"name": name, "saga": "kid"}
            if draw(st.booleans()):
                step["timeout"] = "1h"
            if draw(st.booleans()):
                step["catch"] = [{"errors": ["ChildSagaError"]}]
        elif kind == "await":
            step: dict[str, Any] = {"name": name, "await": "t.job.done", "timeout": "10m",
                                    "match": "event.data.job_id == input.job"}
        elif kind == "policy":
            step = {"name": name, "policy": "gate", "input": {"amount": "input.amount"}}
        else:
            step = {"name": name, "action": f"x.{name}"}
            if draw(st.booleans()):
                step["compensate"] = f"x.undo_{name}"
                if draw(st.booleans()):
                    step["checkpoints"] = True
            else:
                step["compensate"] = "none"
                step["reason"] = "nothing to undo"
            attempts = draw(st.integers(1, 3))
            if attempts > 1:
                step["retry"] = {"attempts": attempts,
                                 "backoff": {"initial": "1s", "max": "5s"}}
            if draw(st.integers(0, 3)) == 0:
                step["catch"] = [{"errors": [draw(st.sampled_from(["*", "SoldOut"]))]}]
            if kind == "fan":
                step["for_each"] = "input.items"
                step["mode"] = draw(st.sampled_from(["all", "best_effort"]))
                step["concurrency"] = draw(st.integers(1, 3))
        if draw(st.integers(0, 4)) == 0:
            step["if"] = "input.flag"
        if i > 1 and draw(st.booleans()):
            # Beside the step before it: both wait for the same earlier step.
            step["depends_on"] = [out[draw(st.integers(0, i - 2))]["name"]]
        out.append(step)
    return out


def job_done(step: str, view: RunView) -> dict[str, Any]:
    return {"job_id": view.input["job"]}


KID = """\
name: kid
version: 1
steps:
  - name: book
    action: x.book
    compensate: x.unbook
    checkpoints: true
"""


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(steps(), st.booleans(), st.sampled_from([1, 1, 1, 2]))
def test_random_sagas_run_on_the_engine_as_explored(saga_steps: list[dict[str, Any]],
                                                    flag: bool, faults: int) -> None:
    saga = {"name": "random", "version": 1,
            "input_schema": {"flag": {"type": "boolean", "required": True},
                             "amount": {"type": "number", "required": True},
                             "items": {"type": "list", "required": True},
                             "job": {"type": "string", "required": True}},
            "steps": saga_steps}
    with tempfile.TemporaryDirectory() as root:
        paths = write_tree(Path(root), {"random": yaml.safe_dump(saga, sort_keys=False),
                                        "kid": KID})
        catalog = Catalog.load_strict(paths)
        checked = explore(catalog, "random", plain_registry(catalog),
                          input={**INPUT, "flag": flag}, events=job_done,
                          bounds=Bounds(faults=faults))
        assert checked.paths >= 1, (saga_steps, flag, checked.summary())
