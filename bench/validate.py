"""Benchmark: how many definition files per second `concordia validate` checks.

Generates a tree of sagas (10 action steps each, every step emitting an event whose payload
is mapped from the input and earlier results) and event files in a temporary directory,
then times:

* ``concordia`` in-process: ``Catalog.load`` of the whole tree — schema validation of every
  file, models, and the cross-file checks (event and payload references, result
  readiness, CEL compilation). Best of ``--repeat`` runs, CEL cache cleared before each.
* ``concordia`` CLI: ``python -m concordia.cli validate DIR --format json`` in a fresh
  process, start-up and imports included (what a CI job or pre-commit hook pays).
* ``concordia`` CLI start-up alone (one small file), the fixed cost in the figure above.
* ``check-jsonschema`` on the same saga files against ``saga.v1.json``, as a reference:
  schema validation only, no cross references.

Prints a table, then one JSON object per line per configuration (``files_per_s``).

    .venv/bin/python bench/validate.py [--sagas 1000] [--events 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAGA_SCHEMA = ROOT / "engine" / "concordia" / "definitions" / "schemas" / "saga.v1.json"
STEPS = 10


@dataclass
class Figure:
    config: str
    tool: str
    files: int
    seconds: float
    note: str = ""

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else float("inf")

    def as_json(self) -> str:
        return json.dumps({"bench": "validate", "config": self.config, "tool": self.tool,
                           "files": self.files, "seconds": round(self.seconds, 4),
                           "files_per_s": round(self.files_per_s, 1)})


# -- the generated tree --------------------------------------------------------------------

def event_name(i: int) -> str:
    return f"bench.domain{i % 20}.event{i}"


def event_yaml(i: int) -> str:
    return f"""\
# yaml-language-server: $schema={SAGA_SCHEMA.parent / "event.v1.json"}
name: {event_name(i)}
version: 1
description: Generated event {i} for the validation benchmark
payload_schema:
  entity_id: {{type: uuid, required: true}}
  amount: {{type: number, required: true, minimum: 0}}
  step: {{type: string, required: true}}
  note: {{type: string}}
reliability: {"persistent" if i % 3 else "transient"}
"""


def saga_yaml(k: int, events: int) -> str:
    lines = [
        f"# yaml-language-server: $schema={SAGA_SCHEMA}",
        f"name: bench_saga_{k}",
        "version: 1",
        f"description: Generated saga {k} for the validation benchmark",
        "input_schema:",
        "  order_id: {type: uuid, required: true}",
        "  amount: {type: number, required: true, minimum: 0}",
        "  customer: {type: email}",
        "defaults:",
        "  retry:",
        "    attempts: 3",
        "    backoff: {initial: 200ms, factor: 2, max: 5s, jitter: 0.2}",
        "    retryable: [RetryableError, TimeoutError]",
        "  timeout: 30s",
        "steps:",
    ]
    for j in range(STEPS):
        source = f"results.step{j - 1}.entity_id" if j else "input.order_id"
        lines += [
            f"  - name: step{j}",
            f"    action: bench.service{j}.do_thing",
            f"    compensate: bench.service{j}.undo_thing",
            "    emit:",
            f"      - event: {event_name((k * STEPS + j) % events)}",
            "        payload:",
            f"          entity_id: {source}",
            # One expression per step that differs from saga to saga, so the CEL cache
            # cannot serve every mapping of the tree from a handful of compilations.
            f"          amount: input.amount * {k % 97 + 1}.0 + {j}.0",
            f"          step: \"'step{j}'\"",
        ]
    return "\n".join(lines) + "\n"


def generate(root: Path, sagas: int, events: int) -> tuple[list[Path], list[Path]]:
    (root / "sagas").mkdir(parents=True)
    (root / "events").mkdir()
    saga_files = []
    for k in range(sagas):
        path = root / "sagas" / f"bench_saga_{k:04d}.yaml"
        path.write_text(saga_yaml(k, events))
        saga_files.append(path)
    event_files = []
    for i in range(events):
        path = root / "events" / f"event_{i:03d}.yaml"
        path.write_text(event_yaml(i))
        event_files.append(path)
    return saga_files, event_files


# -- measurements --------------------------------------------------------------------------

def best_of(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def concordia_in_process(root: Path, files: int, repeat: int) -> Figure:
    from concordia.definitions import Catalog
    from concordia.definitions.expressions import compile_expression

    catalog = Catalog.load([str(root)])
    if catalog.problems:  # measuring error paths would say nothing about the real thing
        shown = "\n".join(p.format_text() for p in catalog.problems[:10])
        raise SystemExit(f"the generated tree is not clean:\n{shown}")

    def load() -> None:
        compile_expression.cache_clear()
        Catalog.load([str(root)])

    return Figure("whole tree, cross references, in-process (best of "
                  f"{repeat})", "concordia", files, best_of(repeat, load))


def concordia_cli(root: Path, files: int, repeat: int) -> Figure:
    command = [sys.executable, "-m", "concordia.cli", "validate", str(root), "--format", "json"]

    def run() -> None:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"concordia validate exited {proc.returncode}:\n{proc.stderr}"
                             f"{proc.stdout[:2000]}")

    return Figure(f"whole tree, cross references, CLI process (best of {repeat})",
                  "concordia", files, best_of(repeat, run))


def concordia_cli_start(root: Path, repeat: int) -> Figure:
    """The fixed cost inside the CLI figure: start-up, imports, one small file."""
    one = next(iter(sorted((root / "events").glob("*.yaml"))))
    command = [sys.executable, "-m", "concordia.cli", "validate", str(one), "--format", "json"]
    return Figure(f"CLI start-up, one event file (best of {repeat})", "concordia", 1,
                  best_of(repeat, lambda: subprocess.run(command, capture_output=True,
                                                         check=True)))


def check_jsonschema(saga_files: list[Path], repeat: int) -> Figure | None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or (
        shutil.which("check-jsonschema"))
    if exe is None:
        print("check-jsonschema not found; skipping the reference figure", file=sys.stderr)
        return None
    command = [exe, "--schemafile", str(SAGA_SCHEMA), *map(str, saga_files)]

    def run() -> None:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"check-jsonschema exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")

    return Figure(f"saga files, schema only, CLI process (best of {repeat})",
                  "check-jsonschema", len(saga_files), best_of(repeat, run))


def table(figures: list[Figure]) -> str:
    head = ("tool", "configuration", "files", "seconds", "files/s")
    rows = [(f.tool, f.config, str(f.files), f"{f.seconds:.3f}", f"{f.files_per_s:,.0f}")
            for f in figures]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                 enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells)

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sagas", type=int, default=1000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it")
    args = parser.parse_args()

    tmp = None
    if args.keep:
        root = Path(args.keep)
        if root.exists():
            shutil.rmtree(root)
    else:
        tmp = tempfile.mkdtemp(prefix="concordia-bench-")
        root = Path(tmp) / "tree"
    try:
        saga_files, event_files = generate(root, args.sagas, args.events)
        files = len(saga_files) + len(event_files)
        print(f"generated {len(saga_files)} sagas ({STEPS} steps each) and "
              f"{len(event_files)} events in {root}; {os.cpu_count()} CPU(s)\n")
        figures = [concordia_in_process(root, files, args.repeat),
                   concordia_cli(root, files, args.repeat),
                   concordia_cli_start(root, args.repeat)]
        reference = check_jsonschema(saga_files, args.repeat)
        if reference is not None:
            figures.append(reference)
        print(table(figures))
        print()
        for figure in figures:
            print(figure.as_json())
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
