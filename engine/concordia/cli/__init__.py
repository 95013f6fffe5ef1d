"""The ``concordia`` command line: a thin shell over the public API.

Exit codes: 0 fine, 1 problems found, 2 usage error. Every environment variable is
``CONCORDIA_`` + the option name (e.g. ``CONCORDIA_STORE``), shown in ``--help``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from concordia.cli import commands

ENV_PREFIX = "CONCORDIA_"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors already; keep its message but no traceback.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def env_default(name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="concordia", description="Declarative saga engine.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.register(sub, env_default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
