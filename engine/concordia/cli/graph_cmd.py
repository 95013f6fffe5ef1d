"""``concordia graph``: a saga drawn as its author sees it, or as the engine runs it.

The default (``--detail steps``) is the author's view (:mod:`concordia.machine.flow`);
``--detail machine`` is the compiled state machine with every transition. ``--run``
colours the diagram by what one run did. SVG is drawn in Python: Graphviz is not needed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from concordia.cli.common import EXIT_OK, UsageError, command

if TYPE_CHECKING:
    from concordia.definitions.models import Saga
    from concordia.runtime.views import RunView

_EPILOG = """\
--detail steps (the default) draws the steps in order (parallel stages side by side),
each as what it is (an action, an await with its timeout, a policy check), retries as
labelled loops, and the compensations the steps declare, undone in reverse beside them.
--detail machine draws the engine's state machine: a state a stage, an undo state a
stage, every transition.

exit status:
  0  drawn
  2  usage error: unknown saga or version, no such store or run
"""


def register(sub: Any, common: Callable[[argparse.ArgumentParser], None],
             definitions: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("graph", help="draw a saga (Mermaid, DOT or SVG)",
                       description="Draw a saga as a diagram.", epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("saga", metavar="SAGA", nargs="?",
                   help="the saga's name (not needed with --run)")
    p.add_argument("--version", type=int, metavar="N",
                   help="draw version N of the saga (default: the latest)")
    p.add_argument("--format", choices=("mermaid", "dot", "svg"), default="mermaid",
                   help="mermaid (for Markdown), dot (for Graphviz) or svg (an image, no "
                        "Graphviz needed); default mermaid")
    p.add_argument("--detail", choices=("steps", "machine"), default="steps",
                   help="steps: the saga as written (default); machine: the engine's state "
                        "machine with every transition")
    p.add_argument("--run", metavar="RUN_ID",
                   help="colour the diagram by what this run did (its saga and version are "
                        "the run's); reads --store, never creates it")
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_graph)


@command
def cmd_graph(args: argparse.Namespace) -> int:
    view = None
    if args.run:
        from concordia.cli.engines import reader, resolve_run_id, saga_of

        with reader(args.store) as engine:
            view = engine.get_run(resolve_run_id(engine, args.run))
            saga = saga_of(engine, view.saga, view.version)
        if saga is None:
            raise UsageError(f"the store holds no definition of {view.saga} v{view.version}")
        if args.saga and args.saga != saga.name:
            raise UsageError(f"run {view.id} is a run of {saga.name}, not {args.saga}")
    else:
        if not args.saga:
            raise UsageError("name the SAGA to draw (or give --run RUN_ID)")
        saga = _saga(args)
    sys.stdout.write(draw(saga, args.format, args.detail, view))
    return EXIT_OK


def _saga(args: argparse.Namespace) -> Saga:
    from concordia.cli.common import definition_paths, warn
    from concordia.definitions.catalog import Catalog

    # Leniently: a saga that loaded can be drawn while the tree still has problems (an
    # event missing from the taxonomy does not change the saga's shape).
    catalog = Catalog.load(definition_paths(args.definitions))
    if catalog.errors:
        warn(f"the definitions have {len(catalog.errors)} problem(s); `concordia validate` "
             "lists them")
    try:
        return catalog.saga(args.saga, args.version)
    except KeyError:
        known = sorted({f"{n} v{v}" for n, v in catalog.sagas})
        raise UsageError(f"no saga {args.saga!r}" + (f" version {args.version}" if args.version
                                                     else "")
                         + f"; known: {', '.join(known) or 'none'}") from None


def draw(saga: Saga, fmt: str, detail: str, view: RunView | None = None) -> str:
    """The diagram of ``saga`` in ``fmt``, coloured by ``view`` if given."""
    if detail == "machine":
        from concordia.machine import compile_saga, to_dot, to_mermaid, to_svg

        compiled = compile_saga(saga)
        current = view.state if view else None
        render = {"mermaid": to_mermaid, "dot": to_dot, "svg": to_svg}[fmt]
        return render(compiled, current)
    from concordia.machine.run_diagram import draw as draw_diagram

    run = (view.visits(), view.status, view.timed_out()) if view else None
    return draw_diagram(saga, "svg" if fmt == "svg" else "mermaid" if fmt == "mermaid"
                        else "dot", run)
