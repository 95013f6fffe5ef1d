"""What every sub-command shares: exit codes, one-line errors, paths, handlers, stores.

Exit codes: 0 fine, 1 problems found (or a run that did not complete), 2 usage error —
bad arguments, a path or store that does not exist, a store that cannot be opened or
written, a handlers module that does not import. Nothing ends in a traceback on
purpose: :func:`command` turns every expected failure into one line on standard error,
in red on a terminal and plain when piped (``NO_COLOR`` is honoured).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    from concordia.registry import Registry
    from concordia.store.base import Store

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2
# A reader that went away (`concordia runs | head -1`): what a shell reports for a
# process ended by SIGPIPE, without the noise.
EXIT_BROKEN_PIPE = 141
ENV_PREFIX = "CONCORDIA_"
DEFAULT_PATHS = ("definitions", "policies")
DEFAULT_STORE = "sqlite:///concordia.db"

EnvDefault = Callable[[str, str | None], str | None]
Command = Callable[[Any], int]


class UsageError(Exception):
    """The command cannot run as asked; the message says why (exit 2)."""


def env_default(name: str, default: str | None = None) -> str | None:
    """The value of ``CONCORDIA_<NAME>`` or ``default``."""
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def env_paths() -> list[str] | None:
    """``CONCORDIA_DEFINITIONS`` split on the path separator, if set."""
    value = env_default("definitions", None)
    return value.split(os.pathsep) if value else None


def error(message: str) -> None:
    """Print ``concordia: error: message`` on standard error (red on a terminal)."""
    text = f"concordia: error: {message}"
    if _colour(sys.stderr):
        text = f"\x1b[31m{text}\x1b[0m"
    print(text, file=sys.stderr)


def warn(message: str) -> None:
    text = f"concordia: warning: {message}"
    if _colour(sys.stderr):
        text = f"\x1b[33m{text}\x1b[0m"
    print(text, file=sys.stderr)


def _colour(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR") and (
        os.environ.get("TERM") != "dumb")


def colour_enabled(stream: Any = None) -> bool:
    """Whether ``stream`` (standard output by default) is a terminal that takes colour."""
    return _colour(sys.stdout if stream is None else stream)


def command(func: Command) -> Command:
    """Run a sub-command and turn its expected failures into one line and an exit code."""

    @functools.wraps(func)
    def run(args: Any) -> int:
        from concordia.errors import ConcordiaError

        try:
            return func(args)
        except UsageError as exc:
            error(str(exc))
        except BrokenPipeError:
            return broken_pipe()
        except Exception as exc:
            # A store that is read-only, locked past its busy timeout or on a missing
            # disk, a definition error: the message is the whole story. Anything else is
            # a bug, and its traceback is the report.
            if not isinstance(exc, ConcordiaError | OSError) and not _sqlite_error(exc):
                raise
            error(one_line(exc))
        return EXIT_USAGE

    return run


def _sqlite_error(exc: BaseException) -> bool:
    # sqlite3 is imported only by the commands that open a store; an error of it means
    # it is loaded (checking this way keeps `validate`'s start-up free of it).
    sqlite3 = sys.modules.get("sqlite3")
    return sqlite3 is not None and isinstance(exc, sqlite3.Error)


def broken_pipe() -> int:
    """Silence the interpreter's own flush of a stdout whose reader has gone."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by something without a descriptor
        pass
    return EXIT_BROKEN_PIPE


def one_line(exc: BaseException) -> str:
    """An exception as one line: its message's first line, or its type's name."""
    from concordia.errors import StoreError

    text = str(exc).strip()
    if _sqlite_error(exc):
        text = f"the store failed: {text or type(exc).__name__}"
        if "locked" in text or "busy" in text:
            text += " (another process holds it; try again when it is done)"
    elif isinstance(exc, OSError) and not isinstance(exc, StoreError):
        text = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or text}"
    first, _, rest = text.partition("\n")
    if rest and not first.endswith(":"):
        return first
    return " ".join(line.strip() for line in text.splitlines())[:2000] or type(exc).__name__


# -- paths, handlers, stores -----------------------------------------------------------------

def definition_paths(given: Sequence[str] | None, *, named_by: str = "PATH") -> list[str]:
    """The paths to load: the ones given (each must exist), else the defaults that exist.

    A path that does not exist is a usage error naming it; with no paths given, a project
    that has only ``definitions/`` (no ``policies/``) is fine.
    """
    if given:
        missing = [p for p in given if not os.path.exists(p)]
        if missing:
            raise UsageError(f"no such file or directory: {', '.join(missing)}")
        return list(given)
    defaults = env_paths() or list(DEFAULT_PATHS)
    found = [p for p in defaults if os.path.exists(p)]
    if not found:
        raise UsageError(f"none of {', '.join(defaults)} exists in {os.getcwd()}; name the "
                         f"files or directories to check ({named_by})")
    return found


def load_handlers(module: str) -> Registry:
    """The ``registry`` of the module the operator named with ``--handlers``."""
    from concordia.errors import ConcordiaError
    from concordia.registry import load_registry

    try:
        return load_registry(module)
    except ImportError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise UsageError(f"--handlers {module}: no module named {exc.name!r} (run from the "
                             "project's directory, or put it on PYTHONPATH)") from None
        # The module exists but its own imports fail: name both.
        raise UsageError(f"--handlers {module}: importing it failed: {type(exc).__name__}: "
                         f"{exc}") from None
    except ConcordiaError as exc:
        raise UsageError(f"--handlers {module}: {exc}") from None


def open_store_for(url: str, *, readonly: bool) -> Store:
    """Open the store ``url`` names; a read-only open never creates or migrates it."""
    from concordia.store import open_store

    return open_store(url, readonly=readonly)


def definitions_option(env_paths: list[str] | None) -> Callable[[argparse.ArgumentParser], None]:
    """The ``--definitions PATH...`` option, shared by the commands that read definitions."""

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--definitions", nargs="+", metavar="PATH", default=env_paths,
                       help="definition files or directories (default: whichever of "
                            "definitions/ and policies/ exist; env CONCORDIA_DEFINITIONS, "
                            f"'{os.pathsep}'-separated)")

    return add


class LazyChoices:
    """``choices`` for argparse computed on first use, so that building the parser does
    not import what only one sub-command needs (run statuses live with the store)."""

    def __init__(self, load: Callable[[], Sequence[str]]) -> None:
        self._load = load
        self._values: Sequence[str] | None = None

    def _get(self) -> Sequence[str]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __contains__(self, item: object) -> bool:
        return item in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def run_statuses() -> Sequence[str]:
    from concordia.status import RUN_STATUSES

    return RUN_STATUSES
