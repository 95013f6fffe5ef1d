"""The definition commands: ``validate``, ``lint``, ``schema``, ``catalog``, ``completion``.

These stay fast to start: nothing here imports the runtime, structlog or the CEL library
unless a definition holds an expression to check.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from concordia.cli.common import (
    EXIT_OK,
    EXIT_PROBLEM,
    EnvDefault,
    colour_enabled,
    command,
    definition_paths,
    load_handlers,
)

_VALIDATE_EPILOG = """\
Without PATH, whichever of definitions/ and policies/ exist in the current directory
are checked (env CONCORDIA_DEFINITIONS, path-separated, changes that default).

exit status:
  0  no errors (warnings may be listed)
  1  problems found: each names its file, line, column and JSON pointer
  2  usage error: a PATH that does not exist, no definitions/ or policies/ here,
     a handlers module that does not import or has no `registry`
"""

_LINT_EPILOG = """\
The audit runs on definitions that load. Files that do not load (unreadable, not YAML,
against the schema) are reported first, as `concordia validate` reports them, and fail
the audit: a tree that does not load is never "no gaps found".

Without --handlers only the definitions are audited: the handlers' code (stub
compensations, polling loops, correlation ids not passed on) is not, and the output
says so; --strict then fails.

exit status:
  0  no gaps (with --strict: no warnings either, and the handlers were checked)
  1  gaps found, or definitions that do not load, or (--strict) handlers not checked
  2  usage error: a PATH that does not exist, a handlers module that does not import
"""


def register(sub: Any, env: EnvDefault) -> None:
    p = sub.add_parser("validate", help="check definitions against their schemas and each "
                                        "other (for CI)",
                       description="Check sagas, events and policies: each file against its "
                                   "JSON Schema, then the tree as a whole (names, expressions, "
                                   "payload mappings, handlers).",
                       epilog=_VALIDATE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or directories to check (default: definitions policies)")
    p.add_argument("--handlers", metavar="MODULE", default=env("handlers", None),
                   help="also check that this module's `registry` binds every handler the "
                        "sagas name (env CONCORDIA_HANDLERS)")
    p.add_argument("--format", choices=("text", "json", "sarif", "github"), default="text",
                   help="text for people, json for scripts, sarif for code scanning, github "
                        "for workflow annotations (default text)")
    p.add_argument("--against-store", metavar="URL", default=None,
                   help="also check against the runs of this store, before a deploy: a "
                        "version edited in place that runs are pinned to (the engine would "
                        "refuse to start), a removed version with runs still in flight "
                        "(opened read-only)")
    p.add_argument("--prove", action="store_true",
                   help="also check every failure path of every saga within the default "
                        "bounds, as `concordia prove` does (when the tree loads)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("lint", help="audit for saga gaps: missing or stub compensations, "
                                    "polling, lost correlation ids",
                       description="Audit sagas and their handlers for the gaps that make "
                                   "sagas unsafe.",
                       epilog=_LINT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or directories to audit (default: definitions policies)")
    p.add_argument("--handlers", metavar="MODULE", default=env("handlers", None),
                   help="module whose `registry` holds the handlers to inspect "
                        "(env CONCORDIA_HANDLERS)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="text for people, json for scripts, markdown for a gap tracker "
                        "(default text)")
    p.add_argument("--strict", action="store_true",
                   help="warnings fail too, and so does an audit without --handlers (exit 1)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("schema", help="print the JSON Schema of a kind of document",
                       description="Print a shipped JSON Schema, for editors and CI.")
    p.add_argument("kind", choices=("saga", "event", "policy"),
                   help="which schema: saga, event or policy")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("catalog", help="list the sagas, events and policies a tree defines")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files or directories (default: definitions policies)")
    p.set_defaults(func=cmd_catalog)

    p = sub.add_parser("completion", help="print the shell completion script",
                       description="Print the script that completes concordia's commands and "
                                   "options. Add to ~/.bashrc:  eval \"$(concordia completion "
                                   "bash)\"")
    p.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh", "powershell"),
                   help="the shell to complete in")
    p.set_defaults(func=cmd_completion)

    from concordia.cli import serve_cmd  # `concordia serve`; its heavy imports are lazy

    serve_cmd.register(sub, env)


def _registry(module: str | None) -> Any:
    return None if module is None else load_handlers(module)


@command
def cmd_validate(args: argparse.Namespace) -> int:
    from concordia.cli.report import render
    from concordia.definitions.catalog import Catalog

    paths = definition_paths(args.paths)
    registry = _registry(args.handlers)
    catalog = Catalog.load(paths, registry)
    problems = list(catalog.problems)
    if args.against_store and not catalog.errors:
        problems += _against_store(catalog, args.against_store, registry)
    if args.prove and not catalog.errors:
        from concordia.explore.model import Bounds
        from concordia.explore.prove import prove

        problems += prove(catalog, Bounds()).problems
        problems.sort(key=lambda p: p.sort_key())
    out = render(problems, args.format, colour=colour_enabled())
    if out:
        print(out)
    return EXIT_PROBLEM if any(p.severity == "error" for p in problems) else EXIT_OK


def _against_store(catalog: Any, url: str, registry: Any) -> list[Any]:
    from concordia.runtime.deploy_check import check_against_store
    from concordia.store import open_store

    store = open_store(url, readonly=True)
    try:
        return check_against_store(catalog, store, registry)
    finally:
        store.close()


@command
def cmd_lint(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from concordia.cli.report import problem_dict, render_text
    from concordia.definitions.catalog import Catalog
    from concordia.lint.audit import (
        audit,
        load_problems,
        no_gaps_line,
        render_markdown,
        unchecked_handlers,
        unchecked_summary,
    )

    paths = definition_paths(args.paths)
    registry = _registry(args.handlers)
    catalog = Catalog.load(paths, registry)
    findings = audit(catalog, registry)
    unloaded = load_problems(catalog)
    unchecked = unchecked_handlers(catalog, registry)
    blocking = [p for p in unloaded if p.severity == "error"]
    if args.format == "json":
        print(json.dumps({"findings": [asdict(f) for f in findings],
                          "problems": [problem_dict(p) for p in unloaded],
                          "unchecked_handlers": unchecked}, indent=2))
    elif args.format == "markdown":
        print(render_markdown(findings, unloaded=unloaded, unchecked=unchecked), end="")
    else:
        if unloaded:
            print(f"{len(blocking)} problem(s) keep definitions from loading; they are not "
                  "audited until fixed:")
            print(render_text(unloaded, colour=colour_enabled()))
            print()
        for f in findings:
            print(f.format_text())
        if unchecked:
            print(unchecked_summary(len(unchecked)))
        print(f"{len(findings)} gap(s) found" if findings else no_gaps_line(unloaded, unchecked))
    failing = [f for f in findings if f.severity == "error" or args.strict]
    return EXIT_PROBLEM if failing or blocking or (args.strict and unchecked) else EXIT_OK


@command
def cmd_schema(args: argparse.Namespace) -> int:
    from concordia.definitions.schema import schema_document

    print(json.dumps(schema_document(args.kind), indent=2))
    return EXIT_OK


@command
def cmd_catalog(args: argparse.Namespace) -> int:
    from concordia.cli.tables import catalog_table
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(definition_paths(args.paths))
    catalog_table(catalog)
    return EXIT_PROBLEM if catalog.errors else EXIT_OK


@command
def cmd_completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    print(shellcode(["concordia"], shell=args.shell), end="")
    return EXIT_OK
