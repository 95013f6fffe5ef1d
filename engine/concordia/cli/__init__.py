# PYTHON_ARGCOMPLETE_OK  (argcomplete looks for this marker to complete `concordia`)
"""The ``concordia`` command line: a thin shell over the public API.

Exit codes: 0 fine, 1 problems found, 2 usage error (141 when the reader of standard
output went away). Every environment variable is ``CONCORDIA_`` + the option name
(e.g. ``CONCORDIA_STORE``), shown in ``--help``. Shell completion: ``concordia
completion bash|zsh|fish``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from concordia import lean
from concordia.cli import commands
from concordia.cli.common import (
    DEFAULT_STORE,
    ENV_PREFIX,
    broken_pipe,
    definitions_option,
    env_default,
    env_paths,
)

__all__ = ["ENV_PREFIX", "build_parser", "env_default", "main"]

_EPILOG = """\
exit status: 0 fine, 1 problems found (or a run that did not complete), 2 usage error.
Each command's --help says more. Environment: CONCORDIA_STORE, CONCORDIA_HANDLERS,
CONCORDIA_DEFINITIONS (path-separated) set the defaults of --store, --handlers and
--definitions; NO_COLOR turns colour off.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors already; keep its message but no traceback.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from concordia.cli import (
        bus_cmds,
        events_cmds,
        explore_cmds,
        graph_cmd,
        inspect_cmds,
        run_cmds,
    )
    from concordia.version import __version__

    parser = _Parser(prog="concordia", description="Declarative saga engine: check "
                     "definitions, run sagas, operate on runs.", epilog=_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"concordia {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")
    store = env_default("store", DEFAULT_STORE)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", default=store, metavar="URL",
                       help=f"the store of runs, e.g. sqlite:///runs.db (env CONCORDIA_STORE; "
                            f"default {DEFAULT_STORE})")

    definitions = definitions_option(env_paths())
    commands.register(sub, env_default)
    run_cmds.register(sub, env_default, common, definitions)
    inspect_cmds.register(sub, common)
    graph_cmd.register(sub, common, definitions)
    events_cmds.register(sub, env_default, common, definitions)
    bus_cmds.register(sub, env_default, common)
    explore_cmds.register(sub, env_default)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The command line owns its process and configures its logging itself: structlog need
    # not hold rich in every worker (rich stays for the command line's own tables).
    lean.install()
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # only when the shell asks for completions
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return broken_pipe()
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
