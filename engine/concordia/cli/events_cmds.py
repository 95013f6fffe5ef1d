"""The `events validate` and `policy eval` sub-commands: files in, verdicts and exit codes out."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog

EnvDefault = Callable[[str, str | None], str | None]

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

_EVENTS_EPILOG = """\
FILE holds one event envelope (CloudEvents 1.0, structured-mode JSON) or a list of
them, as JSON or YAML; `-` reads standard input.

exit status:
  0  every event is valid
  1  an event is invalid (the message names the attribute or payload field),
     or the file is not JSON/YAML
  2  usage error: bad arguments, unreadable file, or no event definitions found
"""

_POLICY_EPILOG = """\
The input FILE holds the policy's inputs as a JSON or YAML object; `-` reads standard
input. The decision record is printed as JSON on standard output.

exit status:
  0  the policy approved
  1  the policy rejected (the record's `reason` says why)
  2  no decision: usage error, unknown policy, unreadable input, or inputs the policy
     cannot evaluate (missing or wrong-typed field, failing rule). An evaluation error
     is never an approval, and it is not a rejection either: nothing was decided.
"""


class _InputError(Exception):
    """A file could not be read or parsed; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


def register(sub: Any, env: EnvDefault) -> None:
    """Add ``events validate`` and ``policy eval`` to the ``concordia`` sub-parsers."""
    env_paths = env("definitions", None)
    defaults = env_paths.split(os.pathsep) if env_paths else None

    events = sub.add_parser("events", help="work with event envelopes")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    p = events_sub.add_parser(
        "validate", help="check an event envelope against the taxonomy",
        description="Check event envelopes against the event taxonomy.",
        epilog=_EVENTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE|-", help="envelope file (JSON or YAML), or -")
    p.add_argument("--definitions", nargs="+", metavar="PATH",
                   default=defaults or ["definitions", "policies"],
                   help="definition files or directories holding the taxonomy "
                        "(default: definitions policies; env CONCORDIA_DEFINITIONS, "
                        f"'{os.pathsep}'-separated)")
    p.set_defaults(func=cmd_events_validate)

    policy = sub.add_parser("policy", help="work with policies")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    p = policy_sub.add_parser(
        "eval", help="evaluate a policy on inputs and print the decision record",
        description="Evaluate a policy on inputs and print the decision record as JSON.",
        epilog=_POLICY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="policy name, e.g. upm_activation")
    p.add_argument("--input", required=True, metavar="FILE|-", dest="input_file",
                   help="the inputs as a JSON or YAML object, or - for standard input")
    p.add_argument("--policy-version", type=int, default=None, metavar="N",
                   help="evaluate version N (default: the latest)")
    p.add_argument("--definitions", nargs="+", metavar="PATH",
                   default=defaults or ["definitions", "policies"],
                   help="definition files or directories (default: definitions policies; "
                        f"env CONCORDIA_DEFINITIONS, '{os.pathsep}'-separated)")
    p.set_defaults(func=cmd_policy_eval)


def cmd_events_validate(args: argparse.Namespace) -> int:
    from concordia.errors import EventError
    from concordia.events.envelope import Envelope
    from concordia.events.taxonomy import validate_event

    try:
        document = _load_data(args.file)
    except _InputError as exc:
        return _report_input_error(exc)
    catalog = _catalog(args.definitions)
    if not catalog.events:
        return _usage(f"no event definitions found in {' '.join(args.definitions)}")
    items = document if isinstance(document, list) else [document]
    if not items:
        print(f"invalid: {_name(args.file)}: the list holds no events")
        return EXIT_PROBLEM
    failed = 0
    for index, item in enumerate(items):
        where = _name(args.file) + (f"[{index}]" if isinstance(document, list) else "")
        try:
            envelope = Envelope.from_dict(item)
            event = validate_event(catalog, envelope)
        except EventError as exc:
            failed += 1
            print(f"invalid: {where}: {exc}")
            continue
        print(f"valid: {where}: {event.name} v{event.version} (id {envelope.id})")
    return EXIT_PROBLEM if failed else EXIT_OK


def cmd_policy_eval(args: argparse.Namespace) -> int:
    import difflib

    from concordia.errors import PolicyError
    from concordia.policies import evaluate_policy

    catalog = _catalog(args.definitions)
    names = catalog.policy_names()
    if args.policy not in names:
        close = difflib.get_close_matches(args.policy, sorted(names), n=1, cutoff=0.6)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f"; known: {', '.join(sorted(names)) or 'none'}")
        return _usage(f"unknown policy {args.policy!r} in {' '.join(args.definitions)}{hint}")
    if args.policy_version is not None and (args.policy, args.policy_version) not in (
            catalog.policies):
        versions = sorted(v for n, v in catalog.policies if n == args.policy)
        return _usage(f"policy {args.policy!r} has no version {args.policy_version} "
                      f"(known: {', '.join(map(str, versions))})")
    policy = catalog.policy(args.policy, args.policy_version)
    try:
        inputs = _load_data(args.input_file)
    except _InputError as exc:
        return _report_input_error(exc, usage_only=True)
    if not isinstance(inputs, dict):
        return _usage(f"{_name(args.input_file)}: the inputs must be an object, not "
                      f"{type(inputs).__name__}")
    try:
        record = evaluate_policy(policy, inputs)
    except PolicyError as exc:
        return _usage(str(exc))
    print(json.dumps(record.to_dict(), indent=2))
    return EXIT_OK if record.approved else EXIT_PROBLEM


# -- helpers ---------------------------------------------------------------------------------


def _catalog(paths: Sequence[str]) -> Catalog:
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(list(paths))
    if catalog.errors:
        # Still usable for what did load; the full list is `concordia validate`'s job.
        print(f"concordia: warning: the definitions have {len(catalog.errors)} problem(s); "
              "run `concordia validate` to see them", file=sys.stderr)
    return catalog


def _load_data(path: str) -> Any:
    """Read JSON or YAML from ``path`` (``-``: stdin), safely and within size limits."""
    from concordia.definitions.yamlsafe import MAX_BYTES, YamlLoadError, load_yaml_bytes

    name = _name(path)
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _InputError(f"{name}: cannot read: {exc.strerror or exc}", EXIT_USAGE) from None
    if len(raw) > MAX_BYTES:
        raise _InputError(f"{name}: larger than the {MAX_BYTES}-byte limit", EXIT_PROBLEM)
    text_start = raw.lstrip()[:1]
    if path.endswith(".json") or text_start in (b"{", b"["):
        return _load_json(raw, name)
    try:
        return load_yaml_bytes(raw, name).data
    except YamlLoadError as exc:
        raise _InputError(exc.problem.format_text(), EXIT_PROBLEM) from None


def _load_json(raw: bytes, name: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                # json keeps the last silently; an envelope with two `type`s is ambiguous.
                raise ValueError(f"duplicate key {key!r}")
            out[key] = value
        return out

    def no_constant(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        return json.loads(raw.decode("utf-8-sig"), object_pairs_hook=no_duplicates,
                          parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise _InputError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}",
                          EXIT_PROBLEM) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _InputError(f"{name}: invalid JSON: {exc}", EXIT_PROBLEM) from None


def _report_input_error(exc: _InputError, *, usage_only: bool = False) -> int:
    if usage_only or exc.code == EXIT_USAGE:
        return _usage(str(exc))
    print(f"invalid: {exc}")
    return exc.code


def _usage(message: str) -> int:
    print(f"concordia: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


__all__ = ["cmd_events_validate", "cmd_policy_eval", "register"]
