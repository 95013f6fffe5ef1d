"""``concordia simulate SAGA --against GIT_REF|DIR``: the paths whose outcome changed
between two versions of a saga, for code review.

The other version's files are read with ``git show`` (never imported, never checked
out) into a temporary directory, or taken from a directory; its saga is explored with
the same bounds. Paths are matched by what the world does on them (their faults and
branches, point by point); a path's outcome is how it ends, what it compensates (in
order) and what it leaves in place. Reported: a compensation dropped or added, an order
changed, a leftover added or removed, an end changed, and paths only one version has.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass

from concordia.cli.common import DEFAULT_PATHS, UsageError, env_paths
from concordia.definitions.catalog import Catalog
from concordia.definitions.models import Saga
from concordia.explore.model import Bounds, Exploration, PathRecord, PointKind
from concordia.explore.search import Workbench

Signature = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True, slots=True)
class Change:
    path: str  # the path's faults and branches, in words
    what: list[str]


def compare_with(other: str, definitions: list[str] | None, saga: Saga,
                 exploration: Exploration, bounds: Bounds, as_json: bool) -> tuple[str, bool]:
    """The report of what changed against ``other``, and whether anything did."""
    paths = definitions or env_paths() or [p for p in DEFAULT_PATHS if os.path.exists(p)]
    with tempfile.TemporaryDirectory(prefix="concordia-against-") as tmp:
        catalog = _other_catalog(other, paths, tmp)
        if catalog.errors:
            raise UsageError(f"the definitions at {other} have {len(catalog.errors)} "
                             "problem(s); `concordia validate` lists them")
        try:
            before = catalog.saga(saga.name)
        except KeyError:
            raise UsageError(f"{other} has no saga {saga.name!r}") from None
        old = Workbench(catalog).explorer(before, bounds).explore()
    changes = changed_paths(old, exploration)
    if as_json:
        return json.dumps({"saga": saga.name, "against": other,
                           "from_version": old.version, "to_version": exploration.version,
                           "changes": [{"path": c.path, "changes": c.what} for c in changes]},
                          indent=2), bool(changes)
    head = (f"{saga.name}: v{old.version} at {other} → v{exploration.version} here, "
            f"{len(old.paths)} → {len(exploration.paths)} paths")
    if not changes:
        return head + "\nno path's outcome changed", False
    lines = [head, f"{len(changes)} path(s) changed:"]
    for change in changes:
        lines.append(f"  {change.path}")
        lines += [f"    {what}" for what in change.what]
    return "\n".join(lines), True


def changed_paths(old: Exploration, new: Exploration) -> list[Change]:
    """The paths whose outcome differs, matched by signature."""
    before = {_signature(p): p for p in old.complete_paths}
    after = {_signature(p): p for p in new.complete_paths}
    out: list[Change] = []
    for sig, path in after.items():
        was = before.get(sig)
        if was is None:
            out.append(Change(_words(sig), [f"a new path: ends {path.status}"]))
            continue
        what = _differences(was, path)
        if what:
            out.append(Change(_words(sig), what))
    for sig, path in before.items():
        if sig not in after:
            out.append(Change(_words(sig), [f"gone (it ended {path.status})"]))
    return out


def _differences(was: PathRecord, now: PathRecord) -> list[str]:
    out: list[str] = []
    if was.status != now.status:
        out.append(f"ends {now.status}, was {was.status}")
    old_undo, new_undo = was.compensations, now.compensations
    for name in old_undo:
        if name not in new_undo:
            out.append(f"compensation dropped: {name}")
    for name in new_undo:
        if name not in old_undo:
            out.append(f"compensation added: {name}")
    common_old = [n for n in old_undo if n in new_undo]
    common_new = [n for n in new_undo if n in old_undo]
    if common_old != common_new:
        out.append(f"order changed: {', '.join(common_new)} (was {', '.join(common_old)})")
    old_left = {lo.describe() for lo in was.leftovers}
    new_left = {lo.describe() for lo in now.leftovers}
    out += [f"leftover added: {lo}" for lo in sorted(new_left - old_left)]
    out += [f"leftover removed: {lo}" for lo in sorted(old_left - new_left)]
    return out


def _signature(path: PathRecord) -> Signature:
    return tuple((str(c.point.kind), c.point.key, c.option.label) for c in path.choices
                 if c.option.fault or c.point.kind in (PointKind.CONDITION, PointKind.ITEMS))


def _words(sig: Signature) -> str:
    return "; ".join(f"{key}: {label}" for _, key, label in sig) or "no fault"


def _other_catalog(other: str, paths: list[str], tmp: str) -> Catalog:
    if os.path.isdir(other):
        found = [os.path.join(other, p) for p in paths
                 if os.path.exists(os.path.join(other, p))]
        return Catalog.load(found or [other])
    copied: list[str] = []
    for path in paths:
        names = _git("ls-tree", "-r", "--name-only", other, "--", path).splitlines()
        for name in names:
            if not name.endswith((".yaml", ".yml")):
                continue
            target = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w", encoding="utf-8") as f:
                f.write(_git("show", f"{other}:./{name}"))
        if names:
            copied.append(os.path.join(tmp, path))
    if not copied:
        raise UsageError(f"{other}: no definitions under {', '.join(paths)} at that revision")
    return Catalog.load(copied)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    except OSError as exc:
        raise UsageError(f"--against needs git: {exc}") from None
    if done.returncode != 0:
        raise UsageError(f"git {' '.join(args[:2])}: {done.stderr.strip() or 'failed'}")
    return done.stdout
