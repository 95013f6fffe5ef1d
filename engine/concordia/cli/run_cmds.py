"""The commands that move runs: ``run``, ``worker``, ``cancel`` and ``retry``.

``run``, ``cancel`` and ``retry`` drive only the run they name or start, showing progress
on standard error, and return when it ends, suspends on an await, or waits on a timer
further away than ``--wait``; they then say how to follow it. ``worker`` drives every run
of the store until stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from concordia.cli import bus_cmds
from concordia.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_PROBLEM,
    EnvDefault,
    UsageError,
    command,
)
from concordia.cli.drive import Progress, drive
from concordia.cli.engines import resolve_run_id, saga_of, writer
from concordia.cli.inputs import InputError, load_data
from concordia.cli.render import Times, waiting_on
from concordia.status import ACTIVE, HALTED, RunStatus

if TYPE_CHECKING:
    from concordia.definitions.models import Saga
    from concordia.runtime.engine import Engine
    from concordia.runtime.views import RunView


_RUN_EPILOG = """\
The run is driven in this process (only this run); progress goes to standard error.

exit status:
  0  the run completed, or it waits (an await, a timer beyond --wait) and a worker or an
     event will carry it on; the last lines say how to follow it
  1  the run ended without completing (compensated, failed, cancelled,
     compensation_failed); the report shows where and why
  2  usage error: unknown saga, invalid input, definitions with problems, handlers that
     do not import or leave a handler unbound, a store that cannot be opened
"""

_CANCEL_EPILOG = """\
Cancelling stops a run that is moving forward (or waiting for an event or a retry) and
compensates, in reverse order, every step that changed something. The compensations run
in this process, so the handlers are needed.

exit status:
  0  the run is cancelled (or still compensating, waiting on a retry beyond --wait)
  1  a compensation failed for good: the run is compensation_failed (fix the cause,
     then `concordia retry RUN_ID`)
  2  usage error: no such store or run, a run that has ended, handlers that do not import
"""

_RETRY_EPILOG = """\
Retrying resumes a run that is stuck: compensation_failed (its failed compensations
run again, from the first attempt) or, where the engine parks a run after an error of
its own, stuck.

exit status:
  0  the run went on and ended, or waits on a timer beyond --wait
  1  it is stuck again (compensation_failed or stuck)
  2  usage error: no such store or run, a run that is not stuck, handlers that do not
     import
"""


def register(sub: Any, env: EnvDefault, common: Callable[[argparse.ArgumentParser], None],
             definitions: Callable[[argparse.ArgumentParser], None]) -> None:
    def handlers(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--handlers", metavar="MODULE", default=env("handlers", None),
                       required=env("handlers", None) is None,
                       help=f"module whose `registry` binds the handlers that {what} "
                            "(env CONCORDIA_HANDLERS)")

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                       help="wait in this process for retry timers due within this many "
                            "seconds (default 60); a longer wait is left to a worker")
        p.add_argument("--format", choices=("text", "json"), default="text",
                       help="text for people, json for scripts (default text)")
        p.add_argument("--utc", action="store_true", help="show times in UTC rather than local")
        p.add_argument("--quiet", "-q", action="store_true",
                       help="no progress lines on standard error")

    p = sub.add_parser("run", help="start a saga and drive that run until it ends or waits",
                       description="Start one run of a saga and drive it in this process.",
                       epilog=_RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("saga", metavar="SAGA", help="the saga's name, e.g. checkout")
    p.add_argument("--input", required=True, metavar="FILE|-",
                   help="the run's input: a JSON or YAML file, or - for standard input")
    handlers(p, "its steps call")
    p.add_argument("--correlation-id", metavar="ID",
                   help="correlate the run (and the events it emits) with this id "
                        "(default: a new one)")
    waiting(p)
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="drive the runs of a store and fire timers until stopped "
                                      "(SIGTERM or Ctrl-C finish the steps in hand first)")
    p.add_argument("--handlers", default=env("handlers", None), required=env("handlers", None)
                   is None, metavar="MODULE",
                   help="module whose `registry` binds the handlers (env CONCORDIA_HANDLERS)")
    p.add_argument("--concurrency", type=int, default=int(env("concurrency", "1") or 1),
                   metavar="N",
                   help="how many runs this worker advances at once, never one run twice "
                        "(env CONCORDIA_CONCURRENCY; default 1)")
    p.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS",
                   help="seconds between looks for new work (timers wake it sooner)")
    p.add_argument("--lease-ttl", type=float, default=30.0, metavar="SECONDS",
                   help="seconds a run stays claimed by this worker if it stops renewing the "
                        "claim; another worker carries on the runs of one that died after "
                        "this long (default 30)")
    bus_cmds.bus_options(p, env, inside_worker=True)
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("cancel", help="cancel a run and compensate what it did",
                       description="Cancel a run in flight and compensate its completed steps.",
                       epilog=_CANCEL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN_ID", help="the run's id, or a prefix of it that no "
                                                     "other run shares")
    p.add_argument("--reason", required=True, metavar="TEXT",
                   help="why the run is cancelled; recorded in its history and error")
    handlers(p, "compensate its steps")
    waiting(p)
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", help="resume a run stuck in compensation_failed",
                       description="Resume a stuck run after its cause was fixed.",
                       epilog=_RETRY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN_ID", help="the run's id, or a prefix of it that no "
                                                     "other run shares")
    handlers(p, "it calls")
    waiting(p)
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_retry)


@command
def cmd_run(args: argparse.Namespace) -> int:
    try:
        data = load_data(args.input)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(data, dict):
        raise UsageError(f"{args.input}: the input must be a mapping")
    with writer(args.store, args.definitions, args.handlers) as engine:
        view = engine.start(args.saga, data, correlation_id=args.correlation_id)
        return _drive_and_report(engine, view.id, args, "run")


@command
def cmd_cancel(args: argparse.Namespace) -> int:
    with writer(args.store, args.definitions, args.handlers) as engine:
        run_id = resolve_run_id(engine, args.run_id)
        engine.cancel(run_id, args.reason)
        return _drive_and_report(engine, run_id, args, "cancel")


@command
def cmd_retry(args: argparse.Namespace) -> int:
    with writer(args.store, args.definitions, args.handlers) as engine:
        run_id = resolve_run_id(engine, args.run_id)
        engine.retry(run_id)
        return _drive_and_report(engine, run_id, args, "retry")


def _drive_and_report(engine: Engine, run_id: str, args: argparse.Namespace, mode: str) -> int:
    from concordia.cli.inspect_cmds import print_run, run_json

    times = Times(utc=args.utc)
    first = engine.get_run(run_id)
    saga = saga_of(engine, first.saga, first.version)
    progress = Progress(quiet=args.quiet)
    view = drive(engine, run_id, saga, max_wait=args.wait, progress=progress, times=times)
    if args.format == "json":
        print(json.dumps(run_json(engine, view, saga), indent=2, default=str))
    else:
        print_run(engine, view, saga, times)
        for line in _next_steps(engine, view, saga, times, args):
            print(line)
    return _exit_code(mode, view.status)


def _next_steps(engine: Engine, view: RunView, saga: Saga | None, times: Times,
                args: argparse.Namespace) -> list[str]:
    """What to do about a run that is not over: how to follow it, and what it waits for."""
    if view.status not in ACTIVE:
        return []
    store = "" if args.store == DEFAULT_STORE else f" --store {args.store}"
    waits = waiting_on(view, saga, times, engine.clock.now()) or "more work"
    lines = ["", f"The run goes on: it waits for {waits}.",
             f"  follow it:   concordia inspect {view.id[:13]} --follow{store}"]
    if view.status == RunStatus.SUSPENDED:
        lines.append(f"  deliver it:  concordia events send EVENT.json{store}")
    lines.append(f"  a worker drives it: concordia worker --handlers {args.handlers}{store}")
    return lines


def _exit_code(mode: str, status: str) -> int:
    """As each command's epilog documents."""
    if mode == "run":
        return EXIT_OK if status in ACTIVE or status == RunStatus.COMPLETED else EXIT_PROBLEM
    return EXIT_PROBLEM if status in HALTED else EXIT_OK


@command
def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from concordia.cli.common import load_handlers
    from concordia.cli.engines import check_store_parent, load_definitions
    from concordia.logging import ensure_configured
    from concordia.runtime.aengine import AsyncEngine
    from concordia.runtime.invoke import HandlerStopError

    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if (problem := bus_cmds.check_worker_options(args)) is not None:
        raise UsageError(problem)
    ensure_configured()
    catalog = load_definitions(args.definitions)
    registry = load_handlers(args.handlers)
    check_store_parent(args.store)
    engine = AsyncEngine(catalog, registry, args.store, lease_ttl=args.lease_ttl,
                         bus=bus_cmds.worker_bus(args))

    async def work() -> None:
        loop = asyncio.get_running_loop()
        # SIGTERM (a supervisor stopping us) and Ctrl-C finish the steps in hand, release
        # the leases, then exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.stop)
        async with engine:
            await bus_cmds.work_with_bus(engine, args)

    print(f"concordia worker on {args.store} ({args.concurrency} at once); Ctrl-C to stop",
          file=sys.stderr)
    try:
        asyncio.run(work())
    except HandlerStopError as exc:
        # A handler raised KeyboardInterrupt or SystemExit: its attempt is journaled as
        # failed; the worker stopped like on SIGTERM and says so.
        print(f"concordia worker: stopped: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    return EXIT_OK
