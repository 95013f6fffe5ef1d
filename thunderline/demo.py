"""The demo, Concordia's main job: the reference sagas run end to end on SQLite.

It validates the definitions, then runs each of the three sagas on its happy path and
with a failure injected at every step in turn (plus the policy rejection and the await
timeout), and prints a table: where it failed, the final state, the compensations that
ran, and the invariants checked against the simulated systems. Exits 1 if any fails.

    python -m thunderline.demo [--store sqlite:///runs/demo.db] [--world runs/world.db]

On the distributed default, the journal in PostgreSQL and the events on NATS JetStream
(the engine's persistent events relayed there, and the Cerebros bridge's completion
callback published there and consumed back into the engine):

    python -m thunderline.demo --store postgresql://127.0.0.1/test --bus nats://127.0.0.1:4222
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from concordia.cli.report import render_text
from concordia.clock import VirtualClock
from concordia.definitions.catalog import Catalog
from concordia.logging import configure_logging
from concordia.runtime.engine import Engine
from thunderline.handlers import build_registry
from thunderline.scenarios import Outcome, Runner, scenarios
from thunderline.world import World

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m thunderline.demo",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--store", help="journal URL (default: a fresh SQLite file)")
    parser.add_argument("--world", help="simulated systems' SQLite file (default: fresh)")
    parser.add_argument("--bus", help="NATS JetStream URL (nats://host:4222): events and the "
                                      "Cerebros callback travel through it")
    parser.add_argument("--stream", default="CONCORDIA", help="the JetStream stream (--bus)")
    parser.add_argument("--subject-prefix", default="concordia.events",
                        help="events go on PREFIX.<event type> (--bus)")
    parser.add_argument("--root", default=ROOT, help="project root holding definitions/")
    args = parser.parse_args(argv)
    console = Console()
    # Handler logs go to a file: the table is the demo's output.
    workdir = tempfile.mkdtemp(prefix="concordia-demo-")
    log_path = os.path.join(workdir, "handlers.log")
    log_file = open(log_path, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(json=True, file=log_file)
    store = args.store or f"sqlite:///{os.path.join(workdir, 'runs.db')}"
    world_path = args.world or os.path.join(workdir, "world.db")

    paths = [os.path.join(args.root, "definitions"), os.path.join(args.root, "policies")]
    catalog = Catalog.load(paths)
    console.print(f"[bold]1. validate[/] {', '.join(paths)}: {render_text(catalog.problems)}")
    if catalog.errors:
        return 1
    world = World(world_path)
    clock = VirtualClock()
    bus = None
    if args.bus:
        from concordia.events.nats import JetStreamSettings, NatsBus

        bus = NatsBus(JetStreamSettings(url=args.bus, stream=args.stream,
                                        prefix=args.subject_prefix))
    engine = Engine(catalog, build_registry(world), store, clock=clock, bus=bus)
    link = None
    if args.bus:
        from thunderline.transport import JetStreamCallbacks

        link = JetStreamCallbacks(args.bus, engine, stream=args.stream,
                                  prefix=args.subject_prefix)
    runner = Runner(engine, world, clock, send=link.send if link else None,
                    through_bus=link.through_bus if link else None)
    plan = scenarios(engine)
    outcomes: list[Outcome] = []
    console.print(f"[bold]2. run[/] {len(plan)} scenarios on {store} (world: {world_path})")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("scenarios", total=len(plan))
        for scenario in plan:
            progress.update(task, description=f"{scenario.saga}: {scenario.failed_at}")
            outcomes.append(runner.run(scenario))
            progress.advance(task)
    pending = len(engine.store.outbox_pending(10_000))
    engine.close()
    if link is not None:
        link.close()
    if bus is not None:
        bus.close()
    world.close()
    log_file.close()
    console.print(_table(outcomes))
    console.print(legend(), style="dim")
    bad = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(bad)}/{len(outcomes)} scenarios held every invariant"
                  f"; journal {store}; handler logs {log_path}")
    if args.bus:
        console.print(f"bus {args.bus}: {len(link.through_bus) if link else 0} Cerebros "
                      f"callback(s) came through JetStream; {pending} persistent event(s) "
                      "left unpublished")
        if pending:
            bad.append(Outcome("outbox", "-", f"{pending} unpublished", "0 unpublished", []))
    for o in bad:
        failed = [name for name, ok in o.checks if not ok]
        console.print(f"[red]FAILED[/] {o.saga} at {o.failed_at}: state {o.status} "
                      f"(expected {o.expected}); broken: {', '.join(failed) or '-'}; "
                      f"run {o.run_id}")
    return 1 if bad else 0


def _table(outcomes: Sequence[Outcome]) -> Table:
    table = Table(title="Thunderline sagas under failure", title_justify="left")
    for col in ("saga", "failed at", "final state", "compensations run", "invariants"):
        table.add_column(col)
    previous = None
    for o in outcomes:
        held = sum(ok for _, ok in o.checks)
        checks = f"{held}/{len(o.checks)} " + " ".join(
            ("✓" if ok else "✗") + SHORT.get(name.split(" (")[0], name) for name, ok in o.checks)
        state = o.status if o.state_ok else f"{o.status} (expected {o.expected})"
        table.add_row(o.saga if o.saga != previous else "", o.failed_at, state,
                      ", ".join(o.compensations) or "-", checks)
        previous = o.saga
    return table


# Short names for the table; the legend below it spells them out.
SHORT = {
    "world consistent": "world",
    "run compensated what it did": "undo",
    "no training jobs left running": "jobs",
    "adapters on their previous snapshot": "adapters",
    "each moved adapter undone by its own compensation": "per-adapter",
    "no stray memberships": "members",
    "magic link and its telemetry carry the correlation id": "email-corr",
    "events carry the trigger's correlation id": "corr",
    "causation chains reach the trigger": "cause",
    "the completion came through JetStream": "bus",
}


def legend() -> str:
    return "invariants: " + "; ".join(f"{short} = {name}" for name, short in SHORT.items())


if __name__ == "__main__":
    sys.exit(main())
