"""``concordia events check --against GIT_REF|DIR``: the taxonomy's changes since a git
revision (or another tree), each classified compatible or breaking for producers and
consumers; a breaking change to an existing event version fails.

The old taxonomy is read with ``git show`` (no git library): the event files under the
given paths as they were at the revision.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from concordia.cli.common import EXIT_OK, EXIT_PROBLEM, UsageError, command, definition_paths

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog

_EPILOG = """\
A change breaks producers when an event built for the old schema may not validate
against the new one (a new required field, a field made required, a narrowed type, a
lost enum value); it breaks consumers when an event valid now may not be what a consumer
of the old schema expects (a removed field, a field made optional, a widened type).
Adding an optional field breaks neither. A new version of an event may change anything:
it is listed, never failed, and sagas that name the old version keep validating against
it.

exit status:
  0  no breaking change to an existing event version
  1  a breaking change to an existing event version (or definitions that do not load)
  2  usage error: an unknown git revision, a directory that does not exist
"""


def register(events_sub: Any, definitions: Callable[[argparse.ArgumentParser], None]) -> None:
    p = events_sub.add_parser(
        "check", help="classify the taxonomy's changes since a git revision or another tree",
        description="Compare the event taxonomy with an earlier one, like a schema "
                    "registry: each change compatible or breaking, for producers and "
                    "consumers.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="definition files or directories (default: definitions)")
    p.add_argument("--against", required=True, metavar="GIT_REF|DIR",
                   help="the earlier taxonomy: a git revision (main, HEAD~1, a tag) of the "
                        "repository the paths are in, or a directory of definitions")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    p.set_defaults(func=cmd_events_check)


@command
def cmd_events_check(args: argparse.Namespace) -> int:
    from concordia.definitions.catalog import Catalog
    from concordia.events.evolution import compare_taxonomies

    paths = definition_paths(args.paths)
    new = Catalog.load(paths)
    with tempfile.TemporaryDirectory(prefix="concordia-events-") as tmp:
        old = _old_catalog(args.against, paths, tmp)
    changes = compare_taxonomies(old.events, new.events)
    problems = [p for p in new.problems if p.severity == "error"]
    breaking = [c for c in changes if c.breaking]
    if args.format == "json":
        print(json.dumps({"against": args.against, "changes": [
            {"event": c.event, "version": c.version, "path": c.path, "change": c.what,
             "breaks_producers": c.producers, "breaks_consumers": c.consumers,
             "new_version": c.new_version, "breaking": c.breaking} for c in changes],
            "problems": [p.format_text() for p in problems]}, indent=2))
    else:
        for problem in problems:
            print(problem.format_text())
        for change in changes:
            print(change.format_text())
        print(f"{len(breaking)} breaking change(s) to existing event versions, "
              f"{len(changes) - len(breaking)} other change(s) against {args.against}")
    return EXIT_PROBLEM if breaking or problems else EXIT_OK


def _old_catalog(against: str, paths: list[str], tmp: str) -> Catalog:
    from concordia.definitions.catalog import Catalog

    if os.path.isdir(against):
        return Catalog.load([against])
    top = _git(["rev-parse", "--show-toplevel"], os.path.dirname(os.path.abspath(paths[0])),
               what=f"--against {against}: not a directory, and {paths[0]} is not in a git "
                    "repository").strip()
    relative = [os.path.relpath(os.path.abspath(p), top) for p in paths]
    if any(r.startswith("..") for r in relative):
        raise UsageError(f"--against {against}: the paths are not all in the git "
                         f"repository at {top}")
    _git(["rev-parse", "--verify", "--quiet", f"{against}^{{commit}}"], top,
         what=f"--against {against}: no such git revision (nor a directory)")
    listed = _git(["ls-tree", "-r", "--name-only", against, "--", *relative], top)
    copied = []
    for name in listed.splitlines():
        if not name.endswith((".yaml", ".yml")):
            continue
        target = os.path.join(tmp, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(_git(["show", f"{against}:{name}"], top))
        copied.append(target)
    return Catalog.load([tmp]) if copied else Catalog()


def _git(argv: list[str], cwd: str, *, what: str | None = None) -> str:
    try:
        out = subprocess.run(["git", *argv], cwd=cwd, capture_output=True, text=True,
                             check=False, timeout=60)
    except OSError as exc:
        raise UsageError(f"cannot run git: {exc}") from None
    if out.returncode != 0:
        raise UsageError(what or f"git {' '.join(argv[:2])}: {out.stderr.strip()}")
    return out.stdout
