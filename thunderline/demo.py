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
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.measure import Measurement
from rich.progress import Progress
from rich.table import Table

from concordia import Catalog, ConcordiaError, Engine, configure_logging
from thunderline.clock import SkippingClock
from thunderline.handlers import build_registry
from thunderline.scenarios import Outcome, Runner, scenarios
from thunderline.world import World

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = "python -m thunderline.demo"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG,
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
    store = args.store or f"sqlite:///{os.path.join(workdir, 'runs.db')}"
    world_path = args.world or os.path.join(workdir, "world.db")

    paths = [os.path.join(args.root, "definitions"), os.path.join(args.root, "policies")]
    catalog = Catalog.load(paths)
    console.print(f"[bold]1. validate[/] {', '.join(paths)}: {_summary(catalog)}",
                  highlight=False)
    if catalog.errors:
        return 1
    with open(log_path, "w") as log_file:
        configure_logging(json=True, file=log_file)
        try:
            outcomes, pending, through_bus = _run(args, console, catalog, store, world_path)
        except ConcordiaError as exc:
            # A missing extra (psycopg for a PostgreSQL store, nats-py for the bus) or a
            # store that does not open: one line, as the command line says it.
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    # Piped or redirected there is no screen to fit, and rich's default 80 columns would
    # cut words short: the table is as wide as its columns need.
    piped = not console.is_terminal
    table = _table(outcomes, piped=piped)
    if piped:
        wide = console.options.update_width(1_000)
        console.width = max(console.width, Measurement.get(console, wide, table).maximum)
    console.print(table)
    console.print(legend(outcomes), style="dim")
    bad = [o for o in outcomes if not o.ok]
    console.print(f"{len(outcomes) - len(bad)}/{len(outcomes)} scenarios held every invariant"
                  f"; journal {store}; handler logs {log_path}")
    if args.bus:
        console.print(f"bus {args.bus}: {through_bus} Cerebros callback(s) came through "
                      f"JetStream; {pending} persistent event(s) left unpublished")
        if pending:
            bad.append(Outcome("outbox", "-", f"{pending} unpublished", "0 unpublished", []))
    for o in bad:
        failed = [name for name, ok in o.checks if not ok]
        console.print(f"[red]FAILED[/] {o.saga} at {o.failed_at}: state {o.status} "
                      f"(expected {o.expected}); broken: {', '.join(failed) or '-'}; "
                      f"run {o.run_id}")
    return 1 if bad else 0


def _summary(catalog: Catalog) -> str:
    if not catalog.problems:
        return "no problems"
    errors = len(catalog.errors)
    lines = [p.format_text() for p in catalog.problems]
    return "\n".join([*lines, f"{errors} error(s), {len(catalog.problems) - errors} warning(s)"])


def _run(args: argparse.Namespace, console: Console, catalog: Catalog, store: str,
         world_path: str) -> tuple[list[Outcome], int, int]:
    """Every scenario on one engine: the outcomes, the events left in the outbox and the
    callbacks that came through the bus."""
    bus = _nats_bus(args) if args.bus else None
    world = World(world_path)
    clock = SkippingClock()
    try:
        engine = Engine(catalog, build_registry(world), store, clock=clock, bus=bus)
    except BaseException:
        world.close()
        if bus is not None:
            bus.close()
        raise
    link = None
    if args.bus:
        from thunderline.transport import JetStreamCallbacks

        link = JetStreamCallbacks(args.bus, engine, stream=args.stream,
                                  prefix=args.subject_prefix)
    runner = Runner(engine, world, clock, send=link.send if link else None,
                    through_bus=link.through_bus if link else None)
    plan = scenarios(engine)
    outcomes: list[Outcome] = []
    console.print(f"[bold]2. run[/] {len(plan)} scenarios on {store} (world: {world_path})",
                  highlight=False)
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
    return outcomes, pending, len(link.through_bus) if link else 0


def _nats_bus(args: argparse.Namespace) -> Any:
    try:
        from concordia import JetStreamSettings, NatsBus
    except ImportError as exc:
        raise ConcordiaError(f"the NATS bus needs nats-py (pip install "
                             f"'concordia-sagas[nats]'): {exc}") from None
    return NatsBus(JetStreamSettings(url=args.bus, stream=args.stream,
                                     prefix=args.subject_prefix))


def _table(outcomes: Sequence[Outcome], *, piped: bool = False) -> Table:
    """The outcomes as a table. ``piped``: for output with no screen to fit, each column
    as wide as its longest word (at least :data:`PIPED_COLUMN`, at most its longest cell),
    so that cells wrap between words and never cut one short."""
    rows: list[list[str]] = []
    previous = None
    for o in outcomes:
        held = sum(ok for _, ok in o.checks)
        checks = f"{held}/{len(o.checks)} " + " ".join(
            ("✓" if ok else "✗") + SHORT.get(name.split(" (")[0], name) for name, ok in o.checks)
        state = o.status if o.state_ok else f"{o.status} (expected {o.expected})"
        rows.append([o.saga if o.saga != previous else "", o.failed_at, state,
                     ", ".join(o.compensations) or "-", checks])
        previous = o.saga
    table = Table(title="Thunderline sagas under failure", title_justify="left")
    for i, col in enumerate(("saga", "failed at", "final state", "compensations run",
                             "invariants")):
        cells = [col] + [row[i] for row in rows]
        width = None
        if piped:
            longest_word = max(cell_len(word) for cell in cells for word in cell.split())
            width = min(max(cell_len(cell) for cell in cells),
                        max(longest_word, PIPED_COLUMN))
        # On a terminal too narrow for a word, the word breaks rather than being cut short.
        table.add_column(col, overflow="fold", width=width)
    for row in rows:
        table.add_row(*row)
    return table


PIPED_COLUMN = 28


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


def legend(outcomes: Sequence[Outcome]) -> str:
    """The short names the table uses, spelt out (only those it uses: the bus's only when
    a callback went through it)."""
    used = {name.split(" (")[0] for o in outcomes for name, _ in o.checks}
    return "invariants: " + "; ".join(f"{short} = {name}" for name, short in SHORT.items()
                                      if name in used)


if __name__ == "__main__":
    sys.exit(main())
