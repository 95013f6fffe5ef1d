"""``concordia simulate`` and ``concordia prove``: every failure path of a saga, worked out
before it runs (:mod:`concordia.explore`).

Neither imports a handler unless ``--handlers`` is given (``simulate`` then checks every
path on the real engine with them): the explorer answers every handler call itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from concordia.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EnvDefault,
    UsageError,
    colour_enabled,
    command,
    definition_paths,
    definitions_option,
    env_paths,
    load_handlers,
)

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog
    from concordia.definitions.models import Saga
    from concordia.explore.model import Bounds

_SIMULATE_EPILOG = """\
A path is the choices the world makes: each handler attempt succeeds, fails before or
after its effect (with each kind of error the step's retry policy and catch table tell
apart), or its worker dies; each compensation succeeds or fails; each await gets its
event or times out; each condition is true or false; each list has 0, 1 or K items; a
child saga completes, compensates or fails; a policy approves or rejects; a cancel
arrives. --faults bounds the non-happy outcomes per path.

formats: text (a row per path, then a summary per failure point), json, markdown (the
compensation gaps tracker's shape: a section per step, with file and line, what fails,
what is compensated, what is left behind and where) and mermaid (the failure map).

exit status:
  0  explored (with --handlers: every path ran on the engine as predicted)
  1  a property is broken on some path (see concordia prove), the definitions do not
     load (validate's problems), with --handlers a path ran otherwise than predicted, or
     with --against a path's outcome changed
  2  usage error: unknown saga, a handlers module that does not import
"""

_PROVE_EPILOG = """\
Checked on every path of every saga within the bounds: no silent leftovers (an effect
that may have landed is compensated, declared `compensate: none`, part of a completed
run, or the run ends compensation_failed), compensations in reverse order and each once,
termination (and max_duration), every await has a deadline or says `timeout: none`, every
event emitted is in the taxonomy and every expression reads only results that exist on
its path. Each breach is reported at its step (file:line) with its shortest
counterexample; leftovers declared on purpose are listed as notes.

exit status:
  0  every property holds on every path
  1  a property is broken, or the definitions do not load (validate's problems)
  2  usage error: a PATH that does not exist
"""


def register(sub: Any, env: EnvDefault) -> None:
    p = sub.add_parser("simulate", help="every failure path of a saga, worked out before "
                                        "it runs",
                       description="Explore every path of a saga within bounds: what runs, "
                                   "what is compensated, what is left in place, how long "
                                   "it may take.",
                       epilog=_SIMULATE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("saga", metavar="SAGA", help="the saga's name")
    p.add_argument("--version", type=int, metavar="N",
                   help="explore version N of the saga (default: the latest)")
    _bounds(p)
    p.add_argument("--format", choices=("text", "json", "markdown", "mermaid"),
                   default="text", help="text, json, markdown (a gap tracker) or mermaid "
                                        "(the failure map); default text")
    p.add_argument("--handlers", metavar="MODULE", default=None,
                   help="also run every path on the engine with this module's `registry` "
                        "and check it does what was predicted (never imported otherwise)")
    p.add_argument("--against", metavar="GIT_REF|DIR",
                   help="list the paths whose outcome differs in this other version of the "
                        "definitions (a git revision, read with git show, or a directory)")
    definitions_option(env_paths())(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("prove", help="check every failure path of every saga (for CI)",
                       description="Explore every saga's paths and check the properties a "
                                   "saga must keep on each.",
                       epilog=_PROVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or directories to prove (default: definitions policies)")
    _bounds(p)
    p.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text",
                   help="text, json, sarif or github (as validate); default text")
    p.set_defaults(func=cmd_prove)


def _bounds(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faults", type=int, choices=(0, 1, 2), default=1,
                   help="faults (non-happy outcomes) per path: 1 (default) or 2")
    p.add_argument("--items", type=int, default=3, metavar="K",
                   help="the length of a fan-out's list besides 0 and 1 (default 3)")


def bounds_of(args: argparse.Namespace) -> Bounds:
    from concordia.explore.model import Bounds

    if not 1 <= args.items <= 50:
        raise UsageError("--items must be between 1 and 50")
    return Bounds(faults=args.faults, items=args.items)


class TreeProblems(Exception):
    """The tree does not load: its problems are printed as validate prints them."""


def load_tree(paths: list[str]) -> Catalog:
    """The tree; if it does not load, its problems printed as ``validate`` prints them
    (and :class:`TreeProblems` raised: nothing is explored)."""
    from concordia.cli.report import render_text
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(paths)
    if catalog.errors:
        print(render_text(catalog.problems, colour=colour_enabled()))
        raise TreeProblems
    return catalog


def saga_in(catalog: Catalog, name: str, version: int | None) -> Saga:
    try:
        return catalog.saga(name, version)
    except KeyError:
        known = sorted({n for n, _ in catalog.sagas})
        raise UsageError(f"no saga {name!r}" + (f" version {version}" if version else "")
                         + f"; known: {', '.join(known) or 'none'}") from None


@command
def cmd_simulate(args: argparse.Namespace) -> int:
    from concordia.explore import report
    from concordia.explore.search import Workbench

    bounds = bounds_of(args)
    try:
        catalog = load_tree(definition_paths(args.definitions, named_by="--definitions"))
    except TreeProblems:
        return EXIT_PROBLEM
    saga = saga_in(catalog, args.saga, args.version)
    bench = Workbench(catalog)
    exploration = bench.explorer(saga, bounds).explore()
    code = EXIT_PROBLEM if exploration.counterexamples or exploration.static else EXIT_OK
    if args.against:
        from concordia.cli.against import compare_with

        text, changed = compare_with(args.against, args.definitions, saga, exploration,
                                     bounds, args.format == "json")
        print(text)
        return EXIT_PROBLEM if changed else EXIT_OK
    if args.format == "json":
        print(report.render_json([exploration]))
    elif args.format == "markdown":
        print(report.render_markdown(catalog, [exploration]), end="")
    elif args.format == "mermaid":
        from concordia.explore.failure_map import failure_map

        sys.stdout.write(failure_map(saga, exploration))
    else:
        print(report.render_text(exploration))
    if args.handlers:
        from concordia.testing import explore as check_on_engine

        registry = load_handlers(args.handlers)
        checked = check_on_engine(catalog, saga.name, registry, bounds=bounds,
                                  version=saga.version, raise_on_mismatch=False)
        print(checked.summary(), file=sys.stderr)
        if checked.mismatches:
            code = EXIT_PROBLEM
    return code


@command
def cmd_prove(args: argparse.Namespace) -> int:
    proof = prove_paths(definition_paths(args.paths), bounds_of(args))
    print_proof(proof, args.format)
    return EXIT_PROBLEM if proof.failed else EXIT_OK


def prove_paths(paths: list[str], bounds: Bounds) -> Any:
    from concordia.definitions.catalog import Catalog
    from concordia.explore.prove import prove

    return prove(Catalog.load(paths), bounds)


def print_proof(proof: Any, fmt: str) -> None:
    from concordia.cli.report import problem_dict, render

    if fmt == "text":
        lines = []
        for p in proof.problems:
            lines.append(p.format_text())
            extra = p.extra or {}
            if "faults" in extra:
                lines += [f"    counterexample: {extra['faults']}",
                          f"    calls: {extra['calls']}", f"    ends: {extra['ends']}"]
        errors = sum(p.severity == "error" for p in proof.problems)
        sagas = len(proof.explorations)
        paths = sum(len(ex.paths) for ex in proof.explorations)
        lines.append(f"{errors} broken propert{'y' if errors == 1 else 'ies'} in {sagas} "
                     f"saga(s), {paths} paths explored" if proof.explorations else
                     f"{errors} error(s): the definitions do not load")
        print("\n".join(lines))
    elif fmt == "json":
        print(json.dumps({"problems": [{**problem_dict(p), **({"counterexample": p.extra}
                                                               if p.extra else {})}
                                       for p in proof.problems],
                          "sagas": [{"saga": ex.saga, "version": ex.version,
                                     "paths": len(ex.paths), "states": ex.states,
                                     "worst_case_seconds": None if ex.worst_duration
                                     == float("inf") else ex.worst_duration}
                                    for ex in proof.explorations]}, indent=2))
    else:
        print(render(proof.problems, fmt))
