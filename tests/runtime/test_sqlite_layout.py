"""The SQLite store's layout: what a commit writes, and stores of older schemas migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from concordia.errors import StoreError
from concordia.runtime import transitions
from concordia.status import RunStatus, StepStatus
from concordia.store.changes import Commit
from concordia.store.records import HistoryEntry, RunRecord, StepRecord
from concordia.store.sqlite import TAIL_LIMIT, SqliteStore
from concordia.store.sqlite_schema import MIGRATIONS, SCHEMA_VERSION


def _run(run_id: str, status: RunStatus = RunStatus.RUNNING, rev: int = 0) -> RunRecord:
    return RunRecord(id=run_id, saga="shop", version=1, status=status, state="run_0",
                     input={"order": 7}, correlation_id="c-1", causation_id=None,
                     cause=run_id, created_at=1.0, updated_at=1.0, rev=rev)


def _commit(store: SqliteStore, run: RunRecord, **records: object) -> None:
    store.commit(Commit(run=run, expect_rev=run.rev, **records))  # type: ignore[arg-type]


def _v2_store(path: Path) -> None:
    """A store as schema version 2 left it, holding one run with steps and history."""
    conn = sqlite3.connect(path)
    for _, statements in MIGRATIONS[:2]:
        for sql in statements:
            assert isinstance(sql, str)
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("INSERT INTO runs (id, saga, version, status, state, input, correlation_id, "
                 "causation_id, cause, created_at, updated_at, wake_at, error, cancel_reason, "
                 "compensated_any, rev) VALUES ('r-1', 'shop', 1, 'running', 'run_1', "
                 "'{\"order\":7}', 'c-1', NULL, 'r-1', 1.0, 2.0, NULL, NULL, NULL, 0, 3)")
    conn.executemany(
        "INSERT INTO steps (run_id, name, status, attempt, result, checkpoint, error, wake_at, "
        "comp_status, comp_attempt, comp_error, started_at, finished_at) "
        "VALUES ('r-1', ?, ?, ?, ?, ?, NULL, NULL, NULL, 0, NULL, ?, ?)",
        [("reserve", "succeeded", 1, '{"hold":"h-1"}', None, 1.0, 1.5),
         ("charge", "running", 2, None, '{"page":3}', 1.6, None)])
    conn.executemany(
        "INSERT INTO history (run_id, at, kind, step, attempt, detail) VALUES (?, ?, ?, ?, ?, ?)",
        [("r-1", 1.0, "run.started", None, None, '{"input":{"order":7}}'),
         ("r-1", 1.5, "step.succeeded", "reserve", 1, '{"result":{"hold":"h-1"}}'),
         ("r-1", 1.7, "step.checkpoint", "charge", 2, '{"data":{"page":3}}')])
    conn.commit()
    conn.close()


def test_a_schema_version_2_store_keeps_its_runs_steps_and_history(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    _v2_store(path)
    store = SqliteStore(f"sqlite:///{path}")
    try:
        assert store.schema_version() == SCHEMA_VERSION == 7
        loaded = store.load("r-1")
        assert loaded is not None
        run, steps, items = loaded
        assert items == {}
        # Columns and step fields added later read as their defaults in migrated rows.
        assert (run.parent_run_id, run.parent_step) == (None, None)
        assert (run.status, run.state, run.rev, run.input) == ("running", "run_1", 3,
                                                               {"order": 7})
        assert steps == {
            "reserve": StepRecord("reserve", StepStatus.SUCCEEDED, 1, {"hold": "h-1"}, None,
                                  started_at=1.0, finished_at=1.5),
            "charge": StepRecord("charge", StepStatus.RUNNING, 2, None, {"page": 3},
                                 started_at=1.6)}
        assert [(h.kind, h.step, h.detail) for h in store.history("r-1")] == [
            ("run.started", None, {"input": {"order": 7}}),
            ("step.succeeded", "reserve", {"result": {"hold": "h-1"}}),
            ("step.checkpoint", "charge", {"data": {"page": 3}})]
        # the migrated run goes on: its next lines follow the old ones
        run.state = "run_2"
        steps["charge"].status, steps["charge"].result = StepStatus.SUCCEEDED, {"paid": True}
        _commit(store, run, steps=[steps["charge"]], history=[
            HistoryEntry("r-1", 3.0, "step.succeeded", "charge", 2, {"result": {"paid": True}})])
        assert [h.kind for h in store.history("r-1")][-2:] == ["step.checkpoint",
                                                              "step.succeeded"]
        again = store.load("r-1")
        assert again is not None
        assert again.steps["charge"].result == {"paid": True}
        assert again.steps["reserve"].result == {"hold": "h-1"}
    finally:
        store.close()


def test_a_long_run_moves_its_history_tail_out_of_the_row_in_order(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        run = _run("r-2")
        store.create(Commit(run=run, steps=[StepRecord("poll")],
                            history=[HistoryEntry("r-2", 0.0, "run.started")]))
        lines = 0
        for i in range(1, 60):  # far past the tail limit: several moves to `history`
            run.updated_at = float(i)
            _commit(store, run, steps=[StepRecord("poll", StepStatus.RUNNING, i)], history=[
                HistoryEntry("r-2", float(i), "step.retry", "poll", i, {"pad": "x" * 80})])
            assert store.patch(transitions.checkpoint("r-2", "poll", i, "w-1", {"i": i},
                                                      float(i) + 0.5)).applied
            lines += 2
        conn = store._conn
        settled = conn.execute("SELECT COUNT(*) FROM history").fetchone()[0]
        tail = conn.execute("SELECT length(tail) FROM runs WHERE id='r-2'").fetchone()[0]
        assert settled > 1
        assert tail <= TAIL_LIMIT + 400
        history = store.history("r-2")
        assert len(history) == lines + 1
        assert [h.at for h in history] == sorted(h.at for h in history)
        loaded = store.load("r-2")
        assert loaded is not None
        assert loaded.steps["poll"].checkpoint == {"i": 59}
        # a run that ends leaves nothing in its row: the whole history is settled
        run.status = RunStatus.COMPLETED
        _commit(store, run, history=[HistoryEntry("r-2", 99.0, "run.completed")])
        assert conn.execute("SELECT tail FROM runs WHERE id='r-2'").fetchone()[0] == "[]"
        assert [h.kind for h in store.history("r-2")][-1] == "run.completed"
        assert len(store.history("r-2")) == lines + 2
    finally:
        store.close()


@pytest.mark.parametrize("length", [5, 50])
def test_a_step_commit_writes_the_same_few_pages_whatever_the_saga_length(
        tmp_path: Path, length: int) -> None:
    """A step's commit rewrites the run's row and the step's record, never every step: a
    50-step run's commits cost what a 5-step run's do, and its row stays within a page."""
    path = tmp_path / "pages.db"
    store = SqliteStore(f"sqlite:///{path}")
    try:
        store._conn.execute("PRAGMA wal_autocheckpoint=0")
        run = _run("r-3")
        names = [f"s{i}" for i in range(length)]
        store.create(Commit(run=run))
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result = {"ref": "x" * 200}
        for i, name in enumerate(names):
            run.state = f"run_{i + 1}"
            _commit(store, run, steps=[StepRecord(name, StepStatus.SUCCEEDED, 1, result)],
                    history=[HistoryEntry("r-3", float(i), "step.succeeded", name, 1,
                                          {"result": result})])
        frames = (path.with_name("pages.db-wal").stat().st_size - 32) // (4096 + 24)
        # the row, the step's leaf, and now and then a settled history tail
        assert frames <= 3 * length, frames
        row = store._conn.execute("SELECT length(tail) + length(input) FROM runs").fetchone()[0]
        assert row <= TAIL_LIMIT + 400
        loaded = store.load("r-3")
        assert loaded is not None
        assert loaded.steps[names[-1]].result == result
        assert len(loaded.steps) == length
    finally:
        store.close()


def test_an_sqlite_too_old_for_the_layout_is_refused_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.31.1")
    with pytest.raises(StoreError, match=r"needs SQLite 3\.35\.0 or newer .* has 3\.31\.1"):
        SqliteStore(f"sqlite:///{tmp_path / 'old.db'}")
    assert not (tmp_path / "old.db").exists()
