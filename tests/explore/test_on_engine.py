"""Every path the explorer predicts, run on the engine: the shipped sagas with the
Thunderline handlers and their simulated systems, and a corpus of sagas that use every
construct with plain handlers. Any difference between prediction and engine fails."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.explore import Bounds
from concordia.registry import Registry
from concordia.runtime.views import RunView
from concordia.testing import PathSetup, explore
from tests.conftest import DEFINITIONS, POLICIES
from tests.explore.conftest import CONSTRUCTS, plain_registry
from thunderline.handlers import build_registry
from thunderline.world import World


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    return Catalog.load_strict([DEFINITIONS, POLICIES])


def thunderline(root: Path, saga: str) -> Callable[[], PathSetup]:
    """A fresh simulated world a path, prepared as the demo prepares it."""
    numbers = itertools.count()

    def setup() -> PathSetup:
        world = World(str(root / f"world-{next(numbers)}.db"))
        registry = build_registry(world)
        if saga == "user_provisioning":
            return PathSetup(registry, {"email": "ada@thunderline.example",
                                        "display_name": "Ada"}, close=world.close)
        if saga == "upm_activation":
            world.ensure_upm_baseline(adapters=3)  # the explorer's lists have 3 items
            return PathSetup(registry, {"snapshot_id": world.upm.create_snapshot(
                0.12, shadow_validated=True)}, close=world.close)

        def completion(step: str, view: RunView) -> Any:
            return world.cerebros.complete_run(view.results["create_run"]["run_id"])

        return PathSetup(registry, {"search_space": "resnet-lite", "trials": 4,
                                    "dataset": "cifar-10"}, completion, world.close)

    return setup


@pytest.mark.parametrize("saga", ["user_provisioning", "upm_activation", "cerebros_nas"])
def test_every_path_of_a_shipped_saga_runs_as_predicted(
        shipped: Catalog, saga: str, tmp_path: Path) -> None:
    checked = explore(shipped, saga, thunderline(tmp_path, saga))
    assert checked.paths >= 27
    assert not checked.mismatches


@pytest.mark.slow
@pytest.mark.parametrize("saga", ["user_provisioning", "upm_activation", "cerebros_nas"])
def test_every_two_fault_path_of_a_shipped_saga_runs_as_predicted(
        shipped: Catalog, saga: str, tmp_path: Path) -> None:
    checked = explore(shipped, saga, thunderline(tmp_path, saga), bounds=Bounds(faults=2))
    assert checked.paths > 200


@pytest.fixture(scope="module")
def constructs() -> Catalog:
    return Catalog.load_strict([str(CONSTRUCTS / "definitions"),
                                str(CONSTRUCTS / "policies")])


def job_done(step: str, view: RunView) -> dict[str, Any]:
    return {"job_id": view.input["job"]}


@pytest.mark.parametrize(("saga", "inputs"), [
    ("linear", [{}]),
    ("parallel", [{}]),
    # The condition is the input's: each value takes the paths it can.
    ("branches", [{"express": True}, {"express": False}]),
    ("waits", [{"job": "j-1", "amount": 5}]),
    ("parent", [{}]),
    ("child", [{}]),
    ("best_effort", [{}]),
])
def test_every_path_of_every_construct_runs_as_predicted(
        constructs: Catalog, saga: str, inputs: list[dict[str, Any]]) -> None:
    registry = plain_registry(constructs)
    ran = 0
    for data in inputs:
        checked = explore(constructs, saga, registry, input=data, events=job_done)
        ran += checked.paths
    assert ran > 0
    every = explore(constructs, saga, registry, input=inputs[0], events=job_done,
                    raise_on_mismatch=False)
    assert every.paths + len(every.skipped) > 0


def test_a_handler_that_does_not_checkpoint_as_declared_is_caught(
        constructs: Catalog) -> None:
    def charge(ctx: Any) -> Any:  # its step declares checkpoints: true; it never does
        return {"ok": True}

    plain = plain_registry(constructs)
    registry = Registry()
    for name in plain.action_names():
        registry.add_action(name, charge if name == "c.charge" else plain.get_action(name).fn)
    for name in plain.compensation_names():
        registry.add_compensation(name, plain.get_compensation(name).fn)
    checked = explore(constructs, "linear", registry, raise_on_mismatch=False)
    assert checked.mismatches
    assert any(m.what == "left in place" and "charge (landed unrecorded)" in m.actual
               for m in checked.mismatches)
    with pytest.raises(AssertionError, match="difference"):
        explore(constructs, "linear", registry)
