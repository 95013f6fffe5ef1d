"""``events validate``, ``events send`` and ``policy eval``: files in, verdicts and exit codes out.

Every problem of an envelope (each attribute, then each payload field) or of a policy's
inputs is reported at once, each once, so one round of fixes is enough.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from concordia.cli import events_check
from concordia.cli.common import (
    DEFAULT_STORE,
    EXIT_OK,
    EXIT_PROBLEM,
    EXIT_USAGE,
    EnvDefault,
    UsageError,
    command,
    definition_paths,
    warn,
)
from concordia.cli.inputs import InputError, display_name, load_data

if TYPE_CHECKING:
    from concordia.definitions.catalog import Catalog
    from concordia.events.envelope import Envelope


_EVENTS_EPILOG = """\
FILE holds one event envelope (CloudEvents 1.0, structured-mode JSON) or a list of
them, as JSON or YAML; `-` reads standard input. Every problem of an envelope is
listed: its attributes first, then each payload field against the taxonomy.

exit status:
  0  every event is valid
  1  an event is invalid (each line names the attribute or payload field),
     or the file is not JSON/YAML
  2  usage error: bad arguments, unreadable file, or no event definitions found
"""

_SEND_EPILOG = """\
FILE holds one event envelope or a list of them (JSON or YAML; `-` reads standard
input). Every event is checked against the taxonomy before any is delivered: one bad
event in a list delivers none. Delivering an event resumes the runs awaiting it and
starts the sagas it triggers; the same event id delivered again does nothing; an event
no run awaits yet is kept for an hour for a run that will (buffered).

The runs it starts or resumes are driven by a worker, or in this process with
--handlers.

exit status:
  0  delivered (a duplicate too: it had been delivered before)
  1  an event is invalid; nothing was delivered
  2  usage error: unreadable file, definitions with problems, a store that cannot be
     opened or written
"""

_POLICY_EPILOG = """\
The input FILE holds the policy's inputs as a JSON or YAML object; `-` reads standard
input. The decision record is printed as JSON on standard output.

exit status:
  0  the policy approved
  1  the policy rejected (the record's `reason` says why)
  2  no decision: usage error, unknown policy, unreadable input, or inputs the policy
     cannot evaluate (each missing or wrong-typed field is listed, a failing rule named).
     An evaluation error is never an approval, and it is not a rejection either:
     nothing was decided.
"""


def register(sub: Any, env: EnvDefault, common: Callable[[argparse.ArgumentParser], None],
             definitions: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``events validate``, ``events send`` and ``policy eval``."""
    events = sub.add_parser("events", help="check and deliver event envelopes",
                            description="Check event envelopes against the taxonomy, or "
                                        "deliver them to the runs of a store.")
    events_sub = events.add_subparsers(dest="events_command", required=True,
                                       metavar="{validate,send,check}")
    p = events_sub.add_parser(
        "validate", help="check event envelopes against the taxonomy",
        description="Check event envelopes against the event taxonomy.",
        epilog=_EVENTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE|-", help="envelope file (JSON or YAML), or -")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    definitions(p)
    p.set_defaults(func=cmd_events_validate)

    p = events_sub.add_parser(
        "send", help="deliver events: resume the runs awaiting them, start triggered sagas",
        description="Validate event envelopes against the taxonomy and deliver them.",
        epilog=_SEND_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE|-", help="envelope file (JSON or YAML), or -")
    p.add_argument("--handlers", metavar="MODULE", default=None,
                   help="also drive the runs it starts or resumes, in this process, with "
                        "the `registry` of this module (otherwise a worker drives them)")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="with --handlers: wait for retry timers due within this many seconds "
                        "(default 60)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text for people, json for scripts (default text)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no progress lines on standard error")
    common(p)
    definitions(p)
    p.set_defaults(func=cmd_events_send)
    events_check.register(events_sub, definitions)

    policy = sub.add_parser("policy", help="evaluate policies",
                            description="Evaluate a policy on inputs.")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True, metavar="{eval}")
    p = policy_sub.add_parser(
        "eval", help="evaluate a policy on inputs and print the decision record",
        description="Evaluate a policy on inputs and print the decision record as JSON.",
        epilog=_POLICY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="policy name, e.g. upm_activation")
    p.add_argument("--input", required=True, metavar="FILE|-", dest="input_file",
                   help="the inputs as a JSON or YAML object, or - for standard input")
    p.add_argument("--policy-version", type=int, default=None, metavar="N",
                   help="evaluate version N (default: the latest)")
    definitions(p)
    p.set_defaults(func=cmd_policy_eval)


# -- checking envelopes ----------------------------------------------------------------------

@dataclass
class Checked:
    """One envelope of a file: where it is, what it is, and everything wrong with it."""

    where: str
    envelope: Envelope | None = None
    event: str = ""  # "name vN" of the taxonomy entry it was checked against
    problems: list[str] = field(default_factory=list)


def check_file(path: str, catalog: Catalog) -> list[Checked]:
    """Every envelope of ``path`` checked against ``catalog``; raises InputError."""
    document = load_data(path)
    items = document if isinstance(document, list) else [document]
    if not items:
        raise InputError(f"{display_name(path)}: the list holds no events", EXIT_PROBLEM)
    return [check_envelope(item, display_name(path) + (
        f"[{i}]" if isinstance(document, list) else ""), catalog) for i, item in
            enumerate(items)]


def check_envelope(raw: Any, where: str, catalog: Catalog) -> Checked:
    from concordia.errors import EventError
    from concordia.events.envelope import named_event, read_envelope
    from concordia.events.taxonomy import payload_errors, resolve_event

    checked = Checked(where)
    envelope, problems = read_envelope(raw)
    checked.problems = [p.text() for p in problems]
    # The payload is checked even when attributes are wrong, so that one pass shows all.
    named = (envelope.type, envelope.version) if envelope else named_event(raw, problems)
    if named is None:
        return checked
    try:
        event = resolve_event(catalog, *named)
    except EventError as exc:
        checked.problems.append(str(exc))
        return checked
    checked.event = f"{event.name} v{event.version}"
    checked.problems += [f"payload {e.format('field')}" for e in payload_errors(event,
                                                                              raw.get("data"))]
    if not checked.problems:
        checked.envelope = envelope
    return checked


@command
def cmd_events_validate(args: argparse.Namespace) -> int:
    catalog = _catalog(args.definitions)
    if not catalog.events:
        raise UsageError(f"no event definitions found in {' '.join(args.definitions or [])}")
    try:
        results = check_file(args.file, catalog)
    except InputError as exc:
        return _report_input_error(exc, args.format)
    if args.format == "json":
        print(json.dumps({"events": [{"where": c.where, "valid": not c.problems,
                                      "event": c.event or None, "problems": c.problems,
                                      "id": c.envelope.id if c.envelope else None}
                                     for c in results]}, indent=2))
    else:
        for c in results:
            if c.problems:
                for problem in c.problems:
                    print(f"invalid: {c.where}: {problem}")
            else:
                assert c.envelope is not None
                print(f"valid: {c.where}: {c.event} (id {c.envelope.id})")
    return EXIT_PROBLEM if any(c.problems for c in results) else EXIT_OK


# -- delivering ---------------------------------------------------------------------------

@command
def cmd_events_send(args: argparse.Namespace) -> int:
    from concordia.cli.engines import load_definitions, writer

    catalog = load_definitions(args.definitions)
    try:
        results = check_file(args.file, catalog)
    except InputError as exc:
        return _report_input_error(exc, args.format)
    bad = [c for c in results if c.problems]
    if bad:
        if args.format == "json":
            print(json.dumps({"delivered": [], "invalid": [
                {"where": c.where, "problems": c.problems} for c in bad]}, indent=2))
            return EXIT_PROBLEM
        for c in bad:
            for problem in c.problems:
                print(f"invalid: {c.where}: {problem}")
        print(f"nothing delivered: {len(bad)} of {len(results)} event(s) invalid")
        return EXIT_PROBLEM
    done = []
    with writer(args.store, args.definitions, args.handlers, catalog) as engine:
        for c in results:
            assert c.envelope is not None
            delivery = engine.deliver(c.envelope)
            done.append((c, delivery, _describe_runs(engine, delivery)))
            if args.format == "text":
                _print_delivery(c, delivery, done[-1][2], args)
        if args.handlers:
            _drive_touched(engine, [d for _, d, _ in done], args)
    if args.format == "json":
        print(json.dumps({"delivered": [
            {"where": c.where, "event_id": d.event_id, "type": c.envelope.type if c.envelope
             else None, "duplicate": d.duplicate, "started": d.started, "resumed": d.resumed,
             "buffered": d.buffered, "runs": runs} for c, d, runs in done]}, indent=2))
    return EXIT_OK


def _describe_runs(engine: Any, delivery: Any) -> dict[str, str]:
    """Run id -> ``saga vN`` for the runs a delivery started or resumed."""
    out = {}
    for run_id in [*delivery.started, *delivery.resumed]:
        view = engine.get_run(run_id)
        out[run_id] = f"{view.saga} v{view.version}"
    return out


def _print_delivery(c: Checked, delivery: Any, runs: dict[str, str],
                    args: argparse.Namespace) -> None:
    assert c.envelope is not None
    head = f"{c.where}: {c.envelope.type} (id {c.envelope.id})"
    if delivery.duplicate:
        print(f"duplicate: {head}: delivered before; nothing done")
        return
    print(f"delivered: {head}")
    for run_id in delivery.resumed:
        print(f"  resumed run {run_id} ({runs[run_id]})")
    for run_id in delivery.started:
        print(f"  started run {run_id} ({runs[run_id]})")
    if delivery.buffered:
        print("  buffered: no run awaits it yet; it is kept for an hour for a run that will")
    if not (delivery.resumed or delivery.started or delivery.buffered):
        print("  no saga awaits or is started by this event; it is recorded, nothing else")
    if (delivery.resumed or delivery.started) and not args.handlers:
        store = "" if args.store == DEFAULT_STORE else f" --store {args.store}"
        print(f"  a worker drives them: concordia worker --handlers MODULE{store}")


def _drive_touched(engine: Any, deliveries: Sequence[Any], args: argparse.Namespace) -> None:
    from concordia.cli.drive import Progress, drive
    from concordia.cli.engines import saga_of
    from concordia.cli.render import Times

    times = Times()
    progress = Progress(quiet=args.quiet)
    touched = dict.fromkeys(r for d in deliveries for r in (*d.resumed, *d.started))
    for run_id in touched:
        first = engine.get_run(run_id)
        view = drive(engine, run_id, saga_of(engine, first.saga, first.version),
                     max_wait=args.wait, progress=progress, times=times)
        if args.format == "text":
            print(f"run {run_id}: {view.status}" + (f" ({view.error})" if view.error else ""))


# -- policies -------------------------------------------------------------------------------

@command
def cmd_policy_eval(args: argparse.Namespace) -> int:
    import difflib

    from concordia.errors import PolicyError
    from concordia.policies import evaluate_policy, input_errors

    catalog = _catalog(args.definitions)
    names = catalog.policy_names()
    where = " ".join(args.definitions or ["the definitions"])
    if args.policy not in names:
        close = difflib.get_close_matches(args.policy, sorted(names), n=1, cutoff=0.6)
        hint = (f"; did you mean {close[0]!r}?" if close
                else f"; known: {', '.join(sorted(names)) or 'none'}")
        raise UsageError(f"unknown policy {args.policy!r} in {where}{hint}")
    if args.policy_version is not None and (args.policy, args.policy_version) not in (
            catalog.policies):
        versions = sorted(v for n, v in catalog.policies if n == args.policy)
        raise UsageError(f"policy {args.policy!r} has no version {args.policy_version} "
                         f"(known: {', '.join(map(str, versions))})")
    policy = catalog.policy(args.policy, args.policy_version)
    try:
        inputs = load_data(args.input_file)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    name = display_name(args.input_file)
    if not isinstance(inputs, dict):
        raise UsageError(f"{name}: the inputs must be an object, not {type(inputs).__name__}")
    problems = input_errors(policy, inputs)
    if problems:
        for problem in problems:
            print(f"concordia: error: {name}: {problem.format('input')}", file=sys.stderr)
        print(f"concordia: error: policy {policy.name!r}: {len(problems)} problem(s) with the "
              "inputs; nothing was decided", file=sys.stderr)
        return EXIT_USAGE
    try:
        record = evaluate_policy(policy, inputs)
    except PolicyError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps(record.to_dict(), indent=2))
    return EXIT_OK if record.approved else EXIT_PROBLEM


# -- helpers ---------------------------------------------------------------------------------

def _catalog(paths: Sequence[str] | None) -> Catalog:
    from concordia.definitions.catalog import Catalog

    catalog = Catalog.load(definition_paths(paths))
    if catalog.errors:
        # Still usable for what did load; the full list is `concordia validate`'s job.
        warn(f"the definitions have {len(catalog.errors)} problem(s); run `concordia "
             "validate` to see them")
    return catalog


def _report_input_error(exc: InputError, fmt: str) -> int:
    if exc.code == EXIT_USAGE:
        raise UsageError(str(exc))
    if fmt == "json":
        print(json.dumps({"events": [], "problems": [str(exc)]}, indent=2))
    else:
        print(f"invalid: {exc}")
    return exc.code
