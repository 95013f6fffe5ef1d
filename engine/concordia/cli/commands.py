"""The sub-commands: each parses its arguments and calls the public API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from concordia.errors import ConcordiaError

EnvDefault = Callable[[str, str | None], str | None]


def register(sub: Any, env: EnvDefault) -> None:
    p = sub.add_parser("validate", help="validate definition trees (for CI)")
    p.add_argument("paths", nargs="*", default=["definitions", "policies"],
                   help="files or directories (default: definitions policies)")
    p.add_argument("--handlers", default=env("handlers", None),
                   help="module whose `registry` must bind every handler "
                        "(env CONCORDIA_HANDLERS)")
    p.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("lint", help="gap audit: find the seed's kinds of saga gap")
    p.add_argument("paths", nargs="*", default=["definitions", "policies"])
    p.add_argument("--handlers", default=env("handlers", None),
                   help="module whose `registry` holds the handlers to inspect "
                        "(env CONCORDIA_HANDLERS)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("schema", help="print the JSON Schema of a kind of document")
    p.add_argument("kind", choices=("saga", "event", "policy"))
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("catalog", help="list what a definition tree defines")
    p.add_argument("paths", nargs="*", default=["definitions", "policies"])
    p.set_defaults(func=cmd_catalog)

    from concordia.cli import events_cmds

    events_cmds.register(sub, env)

    from concordia.cli import run_cmds

    run_cmds.register(sub, env)


def _fail_usage(message: str) -> int:
    print(f"concordia: error: {message}", file=sys.stderr)
    return 2


def _registry(module: str | None) -> Any:
    if module is None:
        return None
    from concordia.registry import load_registry

    return load_registry(module)


def cmd_validate(args: argparse.Namespace) -> int:
    from concordia.cli.report import render
    from concordia.definitions.catalog import Catalog

    try:
        registry = _registry(args.handlers)
    except (ConcordiaError, ImportError) as exc:
        return _fail_usage(f"--handlers {args.handlers}: {exc}")
    catalog = Catalog.load(args.paths, registry)
    out = render(catalog.problems, args.format)
    if out:
        print(out)
    return 1 if catalog.errors else 0


def cmd_lint(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from concordia.definitions.catalog import Catalog
    from concordia.lint.audit import audit, render_markdown

    try:
        registry = _registry(args.handlers)
    except (ConcordiaError, ImportError) as exc:
        return _fail_usage(f"--handlers {args.handlers}: {exc}")
    catalog = Catalog.load(args.paths, registry)
    findings = audit(catalog, registry)
    if args.format == "json":
        print(json.dumps({"findings": [asdict(f) for f in findings]}, indent=2))
    elif args.format == "markdown":
        print(render_markdown(findings), end="")
    else:
        for f in findings:
            print(f.format_text())
        print(f"{len(findings)} gap(s) found" if findings else "no gaps found")
    failing = [f for f in findings if f.severity == "error" or args.strict]
    return 1 if failing else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from concordia.definitions.schema import schema_document

    print(json.dumps(schema_document(args.kind), indent=2))
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from concordia.cli.tables import catalog_table
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(args.paths)
    catalog_table(catalog)
    return 1 if catalog.errors else 0
