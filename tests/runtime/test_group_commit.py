"""Several runs' commits written together (``SqliteStore.commit_many``) mean exactly what
the same commits one at a time mean: each applied or refused on its own revision, the
steps and history of each as written, a refused one leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

from concordia.status import RunStatus, StepStatus
from concordia.store.base import ConflictError
from concordia.store.changes import Commit
from concordia.store.records import HistoryEntry, RunRecord, StepRecord
from concordia.store.sqlite import TAIL_LIMIT, SqliteStore


def _run(run_id: str) -> RunRecord:
    return RunRecord(id=run_id, saga="shop", version=1, status=RunStatus.RUNNING,
                     state="run_0", input={}, correlation_id="c", causation_id=None,
                     cause=run_id, created_at=1.0, updated_at=1.0)


def _step_commit(run: RunRecord, name: str, at: float, pad: str = "") -> Commit:
    run.state = f"after_{name}"
    run.updated_at = at
    return Commit(run=run, steps=[StepRecord(name, StepStatus.SUCCEEDED, 1, {"n": name})],
                  history=[HistoryEntry(run.id, at, "step.succeeded", name, 1,
                                        {"result": {"n": name}, "pad": pad})],
                  expect_rev=run.rev)


def test_a_group_applies_each_commit_and_refuses_only_the_stale_one(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        runs = [_run(f"r{i}") for i in range(4)]
        for run in runs:
            store.create(Commit(run=run))
        stale = _step_commit(runs[2], "a", 2.0)
        stale.expect_rev = 7  # another writer moved r2 on, as far as this commit knows
        commits = [_step_commit(runs[0], "a", 2.0), _step_commit(runs[1], "a", 2.0), stale,
                   _step_commit(runs[3], "a", 2.0)]
        outcomes = store.commit_many(commits)
        assert [type(o) for o in outcomes] == [type(None), type(None), ConflictError,
                                               type(None)]
        for i in (0, 1, 3):
            loaded = store.load(f"r{i}")
            assert loaded is not None
            run, steps, _ = loaded
            assert (run.state, run.rev) == ("after_a", 2)
            assert steps["a"].result == {"n": "a"}
            assert [h.kind for h in store.history(f"r{i}")] == ["step.succeeded"]
            assert commits[i].run.rev == 2
        loaded = store.load("r2")
        assert loaded is not None
        assert (loaded.run.state, loaded.run.rev, loaded.steps) == ("run_0", 1, {})
        assert store.history("r2") == []
    finally:
        store.close()


def test_a_group_keeps_history_in_order_and_moves_a_long_tail_out(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        runs = [_run(f"r{i}") for i in range(3)]
        for run in runs:
            store.create(Commit(run=run))
        for k in range(40):  # many lines of ~300 characters: the tail moves out often
            store.commit_many([_step_commit(run, f"s{k}", float(k), "x" * 250)
                               for run in runs])
        conn = store._conn
        for run in runs:
            history = store.history(run.id)
            assert [h.step for h in history] == [f"s{k}" for k in range(40)]
            tail = conn.execute("SELECT length(tail) FROM runs WHERE id=?",
                                (run.id,)).fetchone()[0]
            assert tail <= TAIL_LIMIT + 400
        # a run that ends in a group leaves its whole history settled
        runs[0].status = RunStatus.COMPLETED
        store.commit_many([_step_commit(runs[0], "end", 99.0),
                           _step_commit(runs[1], "more", 99.0)])
        assert conn.execute("SELECT tail FROM runs WHERE id='r0'").fetchone()[0] == "[]"
        assert store.history("r0")[-1].step == "end"
        assert store.get_run("r0").status == RunStatus.COMPLETED  # type: ignore[union-attr]
    finally:
        store.close()


def test_one_run_twice_in_a_group_applies_in_order(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        run = _run("r0")
        store.create(Commit(run=run))
        first = _step_commit(run, "a", 2.0)
        outcomes = store.commit_many([first])
        assert outcomes == [None]
        second = _step_commit(run, "b", 3.0)
        late = Commit(run=_run("r0"), expect_rev=1)  # read before `first`: refused
        assert [type(o) for o in store.commit_many([second, late])] == [type(None),
                                                                        ConflictError]
        assert [h.step for h in store.history("r0")] == ["a", "b"]
    finally:
        store.close()
