"""The run-facing sub-commands: ``run``, ``inspect``, ``runs``, ``graph``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from concordia.cli.events_cmds import EXIT_USAGE, _InputError, _load_data

if TYPE_CHECKING:
    from concordia.runtime.engine import Engine
    from concordia.runtime.views import RunView

EnvDefault = Callable[[str, str | None], str | None]
DEFAULT_STORE = "sqlite:///concordia.db"


def register(sub: Any, env: EnvDefault) -> None:
    env_paths = env("definitions", None)
    paths = env_paths.split(os.pathsep) if env_paths else ["definitions", "policies"]
    store = env("store", DEFAULT_STORE)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default=store,
                       help=f"store URL (env CONCORDIA_STORE; default {DEFAULT_STORE})")
        p.add_argument("--definitions", nargs="+", default=paths, metavar="PATH",
                       help="definition trees (env CONCORDIA_DEFINITIONS)")

    p = sub.add_parser("run", help="run one saga to completion or suspension")
    p.add_argument("saga")
    p.add_argument("--input", required=True, help="JSON or YAML file with the input; - for stdin")
    p.add_argument("--handlers", default=env("handlers", None), required=env("handlers", None)
                   is None, help="module whose `registry` binds the handlers "
                                 "(env CONCORDIA_HANDLERS)")
    p.add_argument("--correlation-id")
    p.add_argument("--wait", type=float, default=60.0,
                   help="wait for retry timers due within this many seconds (default 60)")
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="drive runs and fire timers until stopped "
                                      "(SIGTERM or Ctrl-C finish the steps in hand first)")
    p.add_argument("--handlers", default=env("handlers", None), required=env("handlers", None)
                   is None, help="module whose `registry` binds the handlers "
                                 "(env CONCORDIA_HANDLERS)")
    p.add_argument("--concurrency", type=int, default=int(env("concurrency", "1") or 1),
                   help="how many runs this worker advances at once, never one run twice "
                        "(env CONCORDIA_CONCURRENCY; default 1)")
    p.add_argument("--poll-interval", type=float, default=0.5,
                   help="seconds between looks for new work (timers wake it sooner)")
    p.add_argument("--lease-ttl", type=float, default=30.0,
                   help="seconds a run stays claimed by this worker if it stops renewing the "
                        "claim; another worker carries on the runs of one that died after "
                        "this long (default 30)")
    common(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("inspect", help="show a run: states, results, errors, compensations")
    p.add_argument("run_id")
    p.add_argument("--format", choices=("text", "json"), default="text")
    common(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--status")
    p.add_argument("--saga")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--format", choices=("text", "json"), default="text")
    common(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("graph", help="draw a saga's state machine")
    p.add_argument("saga")
    p.add_argument("--version", type=int)
    p.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid")
    p.add_argument("--run", help="highlight this run's current state (needs --store)")
    common(p)
    p.set_defaults(func=cmd_graph)


def _usage(message: str) -> int:
    print(f"concordia: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _engine(args: argparse.Namespace, handlers: str | None) -> Engine:
    from concordia.definitions.catalog import Catalog
    from concordia.registry import Registry, load_registry
    from concordia.runtime.engine import Engine

    catalog = Catalog.load_strict([p for p in args.definitions if os.path.exists(p)])
    registry = load_registry(handlers) if handlers else Registry()
    return Engine(catalog, registry, args.store, check_bindings=handlers is not None)


def cmd_run(args: argparse.Namespace) -> int:
    from concordia.errors import ConcordiaError

    try:
        data = _load_data(args.input)
    except _InputError as exc:
        return _usage(str(exc))
    if not isinstance(data, dict):
        return _usage(f"{args.input}: the input must be a mapping")
    try:
        engine = _engine(args, args.handlers)
    except (ConcordiaError, ImportError) as exc:
        return _usage(str(exc))
    with engine:
        try:
            view = engine.start(args.saga, data, correlation_id=args.correlation_id)
        except ConcordiaError as exc:
            return _usage(str(exc))
        engine.drain(max_wait=args.wait)
        view = engine.get_run(view.id)
        _print_run(view)
    return 0 if view.status in ("completed", "suspended", "waiting", "running") else 1


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from concordia.definitions.catalog import Catalog
    from concordia.errors import ConcordiaError
    from concordia.logging import ensure_configured
    from concordia.registry import load_registry
    from concordia.runtime.aengine import AsyncEngine
    from concordia.runtime.invoke import HandlerStopError

    if args.concurrency < 1:
        return _usage("--concurrency must be at least 1")
    ensure_configured()
    try:
        catalog = Catalog.load_strict([p for p in args.definitions if os.path.exists(p)])
        engine = AsyncEngine(catalog, load_registry(args.handlers), args.store,
                             lease_ttl=args.lease_ttl)
    except (ConcordiaError, ImportError) as exc:
        return _usage(str(exc))

    async def work() -> None:
        loop = asyncio.get_running_loop()
        # SIGTERM (a supervisor stopping us) and Ctrl-C finish the steps in hand, release
        # the leases, then exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.stop)
        async with engine:
            await engine.work(concurrency=args.concurrency, poll_interval=args.poll_interval)

    print(f"concordia worker on {args.store} ({args.concurrency} at once); Ctrl-C to stop",
          file=sys.stderr)
    try:
        asyncio.run(work())
    except HandlerStopError as exc:
        # A handler raised KeyboardInterrupt or SystemExit: its attempt is journaled as
        # failed; the worker stopped like on SIGTERM and says so.
        print(f"concordia worker: stopped: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from concordia.errors import ConcordiaError

    try:
        engine = _engine(args, None)
        with engine:
            view = engine.get_run(args.run_id)
            if args.format == "json":
                print(json.dumps(_as_json(engine, view), indent=2, default=str))
            else:
                _print_run(view, engine)
    except ConcordiaError as exc:
        return _usage(str(exc))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from concordia.errors import ConcordiaError

    try:
        engine = _engine(args, None)
    except ConcordiaError as exc:
        return _usage(str(exc))
    with engine:
        views = engine.list_runs(args.status, args.saga, args.limit)
        if args.format == "json":
            print(json.dumps([{"id": v.id, "saga": v.saga, "version": v.version,
                               "status": v.status, "state": v.state, "error": v.error,
                               "created_at": v.created_at} for v in views], indent=2))
            return 0
        table = Table(title=f"Runs in {args.store}", title_justify="left")
        table.add_column("run", no_wrap=True, overflow="fold")
        for col in ("saga", "v", "status", "state", "error"):
            table.add_column(col)
        for view in views:
            table.add_row(view.id, view.saga, str(view.version), view.status, view.state,
                          (view.error or "")[:60])
        Console().print(table)
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from concordia.definitions.catalog import Catalog
    from concordia.errors import ConcordiaError
    from concordia.machine import compile_saga, to_dot, to_mermaid

    try:
        catalog = Catalog.load_strict([p for p in args.definitions if os.path.exists(p)])
        current = None
        if args.run:
            engine = _engine(args, None)
            with engine:
                view = engine.get_run(args.run)
            current = view.state
            saga = catalog.saga(view.saga, view.version)
        else:
            saga = catalog.saga(args.saga, args.version)
    except KeyError:
        return _usage(f"no saga {args.saga!r} in {', '.join(args.definitions)}")
    except ConcordiaError as exc:
        return _usage(str(exc))
    compiled = compile_saga(saga)
    if args.format == "mermaid":
        print(to_mermaid(compiled, current), end="")
        return 0
    dot = to_dot(compiled, current)
    if args.format == "dot":
        print(dot, end="")
        return 0
    binary = shutil.which("dot")
    if binary is None:
        return _usage("--format svg needs Graphviz's `dot` on PATH; use --format dot and "
                      "render it elsewhere")
    done = subprocess.run([binary, "-Tsvg"], input=dot.encode(), capture_output=True,
                          check=False)
    if done.returncode != 0:
        return _usage(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    sys.stdout.write(done.stdout.decode())
    return 0


def _print_run(view: RunView, engine: Engine | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]run {view.id}[/] {view.saga} v{view.version}: "
                  f"[bold]{view.status}[/] (state {view.state})")
    console.print(f"correlation {view.correlation_id}  causation {view.causation_id or '-'}")
    if view.error:
        console.print(f"error: {view.error}")
    steps = Table(title="Steps", title_justify="left")
    for col in ("step", "status", "attempts", "result / checkpoint", "error", "compensation"):
        steps.add_column(col)
    for s in view.steps:
        shown = s.result if s.result is not None else s.checkpoint
        comp = "-" if s.comp_status is None else f"{s.comp_status} ({s.comp_attempt})"
        if s.comp_error:
            comp += f": {s.comp_error}"
        steps.add_row(s.name, s.status, str(s.attempt),
                      _short(json.dumps(shown)) if shown is not None else "",
                      s.error or "", comp)
    console.print(steps)
    history = Table(title="History", title_justify="left")
    for col in ("kind", "step", "attempt", "detail"):
        history.add_column(col)
    for h in view.history:
        history.add_row(h.kind, h.step or "", "" if h.attempt is None else str(h.attempt),
                        _short(json.dumps(h.detail, default=str), 90))
    console.print(history)
    if view.decisions:
        decisions = Table(title="Policy decisions", title_justify="left")
        for col in ("policy", "rule", "decision", "reason"):
            decisions.add_column(col)
        for d in view.decisions:
            decisions.add_row(f"{d['policy']} v{d['policy_version']}", d.get("rule") or "default",
                              d["decision"], d["reason"])
        console.print(decisions)
    if view.events:
        events = Table(title="Events (with causation chain)", title_justify="left")
        for col in ("type", "id", "correlation", "caused by"):
            events.add_column(col)
        for e in view.events:
            chain = " <- ".join(c["type"] for c in reversed(engine.causation_chain(e["id"]))
                                ) if engine else e.get("causationid", "")
            events.add_row(e["type"], e["id"], e.get("correlationid", ""), chain)
        console.print(events)


def _as_json(engine: Engine, view: RunView) -> dict[str, Any]:
    return {
        "id": view.id, "saga": view.saga, "version": view.version, "status": view.status,
        "state": view.state, "input": view.input, "correlation_id": view.correlation_id,
        "causation_id": view.causation_id, "error": view.error,
        "steps": [{"name": s.name, "status": s.status, "attempt": s.attempt,
                   "result": s.result, "checkpoint": s.checkpoint, "error": s.error,
                   "compensation": s.comp_status, "compensation_attempts": s.comp_attempt,
                   "compensation_error": s.comp_error} for s in view.steps],
        "history": [{"at": h.at, "kind": h.kind, "step": h.step, "attempt": h.attempt,
                     "detail": h.detail} for h in view.history],
        "decisions": view.decisions,
        "events": [{**e, "causation_chain": [c["id"] for c in engine.causation_chain(e["id"])]}
                   for e in view.events],
    }


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
