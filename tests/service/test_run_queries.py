"""The stores' operators' queries (``RunQueries``), the same on memory and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from concordia.status import RunStatus
from concordia.store import open_store
from concordia.store.changes import Commit
from concordia.store.records import RunRecord


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'q.db'}"
    s = open_store(url)
    yield s
    s.close()


def _run(i: int, saga: str, status: RunStatus, corr: str) -> RunRecord:
    return RunRecord(id=f"r-{i:03d}", saga=saga, version=1, status=status, state="s",
                     input={}, correlation_id=corr, causation_id=None, cause=f"r-{i:03d}",
                     created_at=float(i), updated_at=float(i))


def test_pages_of_runs_newest_first_under_filters(store: Any) -> None:
    kinds = [("a", RunStatus.COMPLETED, "x"), ("b", RunStatus.SUSPENDED, "x"),
             ("a", RunStatus.SUSPENDED, "y")]
    for i in range(12):
        saga, status, corr = kinds[i % 3]
        store.create(Commit(run=_run(i, saga, status, corr)))
    page = store.page_runs
    assert [r.id for r in page(None, None, None, None, 3)] == ["r-011", "r-010", "r-009"]
    assert [r.id for r in page("a", None, None, "r-009", 3)] == ["r-008", "r-006", "r-005"]
    assert [r.id for r in page("a", "suspended", "y", None, 100)] == [
        "r-011", "r-008", "r-005", "r-002"]
    assert [r.id for r in page(None, None, "x", "r-001", 10)] == ["r-000"]
    assert page(None, None, None, "no-such-run", 10) == []
    assert store.run_counts() == [
        ("a", "completed", 4), ("a", "suspended", 4), ("b", "suspended", 4)]
    assert store.outbox_backlog() == (0, None)


def test_the_outbox_backlog_counts_unpublished_events_and_dates_the_oldest(store: Any
                                                                          ) -> None:
    run = _run(1, "a", RunStatus.RUNNING, "x")
    events = [{"envelope": {"id": f"e-{i}", "source": "s", "type": "t",
                            "time": f"2026-01-0{i}T00:00:00Z"}, "persistent": i != 3}
              for i in (1, 2, 3)]
    store.create(Commit(run=run, events=events))
    assert store.outbox_backlog() == (2, "2026-01-01T00:00:00Z")
    (first, _), _ = store.outbox_pending(10)
    store.mark_published([first], 5.0)
    assert store.outbox_backlog() == (1, "2026-01-02T00:00:00Z")
