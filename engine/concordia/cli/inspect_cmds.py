"""The read-only run commands: ``inspect`` (one run, optionally followed) and ``runs``.

Both open the store read-only: a missing store is an error naming it, never a new file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from concordia.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    LazyChoices,
    command,
    run_statuses,
)
from concordia.cli.engines import reader, resolve_run_id, saga_of
from concordia.cli.render import (
    Times,
    child_run_id,
    cut,
    history_line,
    saga_step,
    short_ids,
    state_label,
    step_row,
    waiting_on,
)
from concordia.errors import ConcordiaError
from concordia.status import FINAL, RunStatus
from concordia.store.records import StepRecord

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog
    from concordia.definitions.models import Saga
    from concordia.runtime.engine import Engine
    from concordia.runtime.views import RunView

# `--follow` stops at these; a stuck run is followed on (`retry` moves it again).
_ENDED = FINAL | {RunStatus.COMPENSATION_FAILED}

_INSPECT_EPILOG = """\
RUN_ID may be any prefix of a run id (4 characters or more) that no other run shares (as
`concordia runs` shows them). Times are ISO 8601 in the local zone (--utc: in UTC).

exit status:
  0  shown (with --follow: the run completed)
  1  with --follow: the run ended otherwise (compensated, failed, cancelled,
     compensation_failed)
  2  usage error: no such store or run, an ambiguous prefix
"""

_RUNS_EPILOG = """\
Ids are shortened to the shortest prefix that names one run; `concordia inspect`
takes them as they are shown.

exit status:
  0  listed (also when no run matches)
  2  usage error: no such store, an unknown --status
"""


def register(sub: Any, common: Any) -> None:
    """Add ``inspect`` and ``runs``; ``common(p)`` adds ``--store``."""

    def definitions(p: argparse.ArgumentParser) -> None:
        # Runs are shown from the definitions their store keeps; these are only read for
        # a run whose definition the store lacks (a store written before it kept them).
        p.add_argument("--definitions", nargs="+", metavar="PATH", default=None,
                       help="definition trees to name the states of runs whose definition "
                            "the store does not keep (rarely needed)")

    p = sub.add_parser("inspect", help="show one run: steps, history, events, deadlines",
                       description="Show a run: its state, each step's attempts, results and "
                                   "compensation (a fan-out's items one by one), the details "
                                   "of its errors, its parent and child runs (child sagas, as "
                                   "a tree), its history, the events it emitted and the "
                                   "policy decisions it recorded.",
                       epilog=_INSPECT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN_ID", help="the run's id, or a prefix of it that no "
                                                     "other run shares")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new history lines until the run ends")
    p.add_argument("--interval", type=float, default=0.5, metavar="SECONDS",
                   help="with --follow: how often to look for new lines (default 0.5)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    p.add_argument("--utc", action="store_true", help="show times in UTC rather than local")
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("runs", help="list runs, newest last",
                       description="List the runs in a store, oldest first.",
                       epilog=_RUNS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--status", choices=LazyChoices(run_statuses), metavar="STATUS",
                   help="only runs with this status (one of: %(choices)s)")
    p.add_argument("--saga", metavar="NAME", help="only runs of this saga")
    p.add_argument("--limit", type=_positive, default=50, metavar="N",
                   help="show at most N runs (default 50)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    p.add_argument("--utc", action="store_true", help="show times in UTC rather than local")
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_runs)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


@command
def cmd_inspect(args: argparse.Namespace) -> int:
    times = Times(utc=args.utc)
    with reader(args.store) as engine:
        run_id = resolve_run_id(engine, args.run_id)
        view = engine.get_run(run_id)
        saga = saga_of(engine, view.saga, view.version, _fallback(args))
        if args.follow:
            return _follow(engine, view, saga, times, args)
        if args.format == "json":
            print(json.dumps(run_json(engine, view, saga), indent=2, default=str))
        else:
            print_run(engine, view, saga, times)
    return EXIT_OK


def _follow(engine: Engine, view: RunView, saga: Saga | None, times: Times,
            args: argparse.Namespace) -> int:
    as_json = args.format == "json"
    if not as_json:
        print(headline(view, saga))
    shown = 0
    while True:
        for entry in view.history[shown:]:
            if as_json:
                print(json.dumps({"run_id": view.id, **_history_json(entry)}, default=str))
            else:
                print(history_line(entry, times, saga))
        shown = len(view.history)
        sys.stdout.flush()
        if view.status in _ENDED:
            break
        time.sleep(args.interval)
        view = engine.get_run(view.id)
    if as_json:
        print(json.dumps({"run_id": view.id, "status": view.status, "ended": True}))
    else:
        print(f"run {view.id} ended {view.status}"
              + (f": {view.error}" if view.error and view.status != RunStatus.COMPLETED
                 else ""))
    return EXIT_OK if view.status == RunStatus.COMPLETED else EXIT_PROBLEM


@command
def cmd_runs(args: argparse.Namespace) -> int:
    times = Times(utc=args.utc)
    with reader(args.store) as engine:
        views = engine.list_runs(args.status, args.saga, args.limit)
        sagas = _Sagas(engine, args)
        if args.format == "json":
            print(json.dumps([{"id": v.id, "saga": v.saga, "version": v.version,
                               "status": v.status, "state": v.state,
                               "state_label": state_label(v.state, sagas.of(v)),
                               "error": v.error, "created_at": v.created_at,
                               "updated_at": v.updated_at, "wake_at": v.wake_at}
                              for v in views], indent=2))
            return EXIT_OK
        _runs_table(engine, views, times, sagas)
    return EXIT_OK


def _fallback(args: argparse.Namespace) -> Catalog | None:
    """The ``--definitions`` given, loaded leniently (problems do not matter to naming)."""
    import os

    from concordia.definitions.catalog import Catalog

    paths = [p for p in (args.definitions or []) if os.path.exists(p)]
    return Catalog.load(paths) if paths else None


class _Sagas:
    """The definitions the listed runs are pinned to, looked up once per saga version; the
    ``--definitions`` are loaded only for a run whose definition the store lacks."""

    def __init__(self, engine: Engine, args: argparse.Namespace) -> None:
        self.engine = engine
        self.args = args
        self.cache: dict[tuple[str, int], Saga | None] = {}
        self.fallback: Catalog | None = None
        self.loaded = False

    def of(self, view: RunView) -> Saga | None:
        key = (view.saga, view.version)
        if key not in self.cache:
            saga = saga_of(self.engine, view.saga, view.version)
            if saga is None and not self.loaded:
                self.fallback, self.loaded = _fallback(self.args), True
            if saga is None and self.fallback is not None:
                saga = saga_of(self.engine, view.saga, view.version, self.fallback)
            self.cache[key] = saga
        return self.cache[key]


def _runs_table(engine: Engine, views: list[RunView], times: Times, sagas: _Sagas) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not views:
        console.print(f"no runs in {engine.store.url}", highlight=False)
        return
    ids = short_ids([v.id for v in views],
                    lambda prefix: len(engine.store.find_run_ids(prefix, 2)) < 2)
    wide = console.width >= 110
    table = Table(title=f"Runs in {engine.store.url}", title_justify="left", box=None,
                  pad_edge=False, header_style="bold")
    # Statuses and ids are never cut or wrapped: a reader scans them, and `inspect` takes
    # the id as shown. Saga and state names wrap when the terminal is narrow.
    table.add_column("run", no_wrap=True)
    table.add_column("saga", overflow="fold")
    table.add_column("status", no_wrap=True, min_width=max(len(v.status) for v in views))
    table.add_column("state", overflow="fold")
    table.add_column("updated", no_wrap=True)
    if wide:
        table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    for v in views:
        row = [ids[v.id], f"{v.saga} v{v.version}", _status(v.status),
               state_label(v.state, sagas.of(v)),
               times.stamp(v.updated_at, precise=False)]
        if wide:
            row.append(v.error or "")
        table.add_row(*row)
    console.print(table, highlight=False)


_COLOURS: dict[str, str] = {RunStatus.COMPLETED: "green", RunStatus.COMPENSATION_FAILED: "bold red",
            RunStatus.FAILED: "red", RunStatus.COMPENSATED: "yellow",
            RunStatus.CANCELLED: "yellow", RunStatus.STUCK: "bold red"}


def _status(status: str) -> str:
    colour = _COLOURS.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def headline(view: RunView, saga: Saga | None) -> str:
    return (f"run {view.id}  {view.saga} v{view.version}  {view.status}"
            f"  ({state_label(view.state, saga)})")


def print_run(engine: Engine, view: RunView, saga: Saga | None, times: Times) -> None:
    """The whole of a run for a person: header, steps, history, decisions, events."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    now = engine.clock.now()
    console.print(f"[bold]run {view.id}[/]")
    fields = [("saga", f"{view.saga} v{view.version}"), ("status", _status(view.status)),
              ("state", escape(state_label(view.state, saga))),
              ("started", times.stamp(view.created_at)), ("updated", times.stamp(view.updated_at)),
              ("correlation", view.correlation_id), ("caused by", view.causation_id or "-")]
    if view.parent_run_id:
        fields.append(("parent", f"{view.parent_run_id} (step {view.parent_step})"))
    waiting = waiting_on(view, saga, times, now)
    if waiting:
        fields.append(("waiting", escape(waiting)))
    if view.error:
        fields.append(("error", f"[red]{escape(view.error)}[/]"))
    for name, value in fields:
        console.print(f"  {name:<12}{value}", soft_wrap=True)
    steps = Table(title="Steps", title_justify="left", box=None, pad_edge=False,
                  header_style="bold")
    steps.add_column("step", no_wrap=True)
    steps.add_column("status", no_wrap=True)
    steps.add_column("tries", justify="right", no_wrap=True)
    steps.add_column("compensation", overflow="fold")
    steps.add_column("result / error", overflow="fold")
    for rec in view.steps:
        steps.add_row(*(escape(cell) for cell in step_row(rec)))
    console.print(steps)
    failed = [rec for rec in view.steps if rec.error_detail]
    if failed:
        console.print("[bold]Errors[/] (the last failure of each step, with its details)")
        for rec in failed:
            console.print(escape(f"  {rec.name}: {problem_line(rec.error_detail or {})}"),
                          soft_wrap=True)
    tree = child_tree(engine, view, saga)
    if tree:
        console.print("[bold]Child runs[/]")
        for line in tree_lines(tree):
            console.print(escape(line), soft_wrap=True)
    console.print("[bold]History[/]")
    for entry in view.history:
        console.print(escape(history_line(entry, times, saga)), soft_wrap=True)
    if view.decisions:
        console.print("[bold]Policy decisions[/]")
        for d in view.decisions:
            console.print(escape(f"  {d['policy']} v{d['policy_version']}: {d['decision']} "
                                 f"by {d.get('rule') or 'the default'}: {d['reason']}"))
    if view.events:
        console.print("[bold]Events emitted[/] (with their causes, oldest first)")
        for e in view.events:
            chain = " <- ".join(c["type"] for c in reversed(engine.causation_chain(e["id"])))
            console.print(escape(f"  {e['type']}  {e['id']}  {cut(chain, 120)}"))


def problem_line(problem: dict[str, Any]) -> str:
    """An error's details on one line: ``type (status) title: message {details}``."""
    text = str(problem.get("type") or "error")
    if problem.get("status") is not None:
        text += f" ({problem['status']})"
    if problem.get("title") and problem.get("title") != problem.get("type"):
        text += f" {problem['title']}"
    if problem.get("message"):
        text += f": {problem['message']}"
    if problem.get("details") is not None:
        text += " " + cut(json.dumps(problem["details"], default=str), 400)
    return text


# How deep `inspect` follows child sagas (validation refuses sagas that call themselves,
# so this only bounds the output).
MAX_TREE_DEPTH = 8


def child_tree(engine: Engine, view: RunView, saga: Saga | None, depth: int = 0
               ) -> list[dict[str, Any]]:
    """The child runs a run started (child saga steps), each with its own children."""
    from concordia.definitions.models import SagaStep

    out: list[dict[str, Any]] = []
    if depth >= MAX_TREE_DEPTH:
        return out
    for rec in view.steps:
        step = saga_step(saga, rec.name)
        child_id = child_run_id(rec)
        if not (isinstance(step, SagaStep) and isinstance(child_id, str)):
            continue
        try:
            child = engine.get_run(child_id)
        except ConcordiaError:
            out.append({"step": rec.name, "run_id": child_id, "missing": True})
            continue
        child_saga = saga_of(engine, child.saga, child.version)
        out.append({"step": rec.name, "run_id": child.id, "saga": child.saga,
                    "version": child.version, "status": child.status,
                    "children": child_tree(engine, child, child_saga, depth + 1)})
    return out


def tree_lines(tree: list[dict[str, Any]], indent: int = 2) -> list[str]:
    lines: list[str] = []
    for node in tree:
        if node.get("missing"):
            lines.append(f"{' ' * indent}{node['step']} -> run {node['run_id']} (not in the "
                         "store)")
            continue
        lines.append(f"{' ' * indent}{node['step']} -> {node['saga']} v{node['version']}  "
                     f"{node['run_id']}  {node['status']}")
        lines += tree_lines(node["children"], indent + 4)
    return lines



def run_json(engine: Engine, view: RunView, saga: Saga | None) -> dict[str, Any]:
    return {
        "id": view.id, "saga": view.saga, "version": view.version, "status": view.status,
        "state": view.state, "state_label": state_label(view.state, saga),
        "input": view.input, "correlation_id": view.correlation_id,
        "causation_id": view.causation_id, "error": view.error,
        "parent_run_id": view.parent_run_id, "parent_step": view.parent_step,
        "created_at": view.created_at, "updated_at": view.updated_at, "wake_at": view.wake_at,
        "steps": [{"name": s.name, "status": s.status, "attempt": s.attempt,
                   "result": s.result, "checkpoint": s.checkpoint, "error": s.error,
                   "wake_at": s.wake_at, "started_at": s.started_at,
                   "finished_at": s.finished_at,
                   "compensation": s.comp_status, "compensation_attempts": s.comp_attempt,
                   "compensation_error": s.comp_error, "error_detail": s.error_detail,
                   "caught": s.caught,
                   "items": s.items if isinstance(s, StepRecord) else None}
                  for s in view.steps],
        "children": child_tree(engine, view, saga),
        "history": [_history_json(h) for h in view.history],
        "decisions": view.decisions,
        "events": [{**e, "causation_chain": [c["id"] for c in engine.causation_chain(e["id"])]}
                   for e in view.events],
    }


def _history_json(entry: Any) -> dict[str, Any]:
    return {"at": entry.at, "kind": entry.kind, "step": entry.step, "attempt": entry.attempt,
            "detail": entry.detail}
