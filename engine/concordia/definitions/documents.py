"""One definition file → located problems, frozen models, and outlines for checking.

Steps: safe YAML load (with marks) → tell the kind of document → JSON Schema validation
with messages rewritten to say what to do (:mod:`~concordia.definitions.messages`) →
per-kind checks that need no other file → pydantic models. A problem spoils only its
region (a step, a rule, one event of a domain file, a top-level key): what lies outside
is still built into an outline (:mod:`~concordia.definitions.outline`) so that the
catalog checks it in the same pass. Cross-file checks belong to
:mod:`concordia.definitions.catalog`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import SchemaError
from pydantic import ValidationError as PydanticValidationError

from concordia.definitions.durations import parse_duration
from concordia.definitions.messages import cut, describe, quote, suggest, type_name
from concordia.definitions.models import (
    EventDef,
    Policy,
    Rule,
    Saga,
    Step,
    step_from_document,
)
from concordia.definitions.outline import PolicyOutline, Regions, SagaOutline, StepSlot
from concordia.definitions.payload import is_full_json_schema
from concordia.definitions.problems import Problem, Severity, pointer_join
from concordia.definitions.schema import Kind, is_valid, validator
from concordia.definitions.yamlsafe import (
    Document,
    YamlLoadError,
    load_yaml_bytes,
    read_regular_file,
)

# Keys that only make sense on one kind of step.
_STEP_KEYS: dict[str, set[str]] = {
    "action": {"name", "description", "depends_on", "emit", "timeout", "if", "action",
               "compensate", "reason", "retry", "compensation_retry", "emit_on_compensate",
               "catch", "for_each", "as", "concurrency", "mode", "checkpoints"},
    "await": {"name", "description", "depends_on", "emit", "timeout", "if", "await", "match",
              "on_timeout", "version"},
    "policy": {"name", "description", "depends_on", "emit", "timeout", "if", "policy",
               "version", "input"},
    "saga": {"name", "description", "depends_on", "emit", "timeout", "if", "saga", "version",
             "input", "catch"},
}
STEP_KINDS = ("action", "await", "policy", "saga")
# Keys that only mean something beside `for_each`.
_FAN_OUT_KEYS = ("as", "concurrency", "mode")
# Names an item may not take: the variables expressions already read, and `index`.
RESERVED_NAMES = frozenset({"input", "results", "run", "event", "error", "index"})
_SAGA_KEYS = ("name", "version", "description", "input_schema", "trigger", "defaults",
              "on_complete", "on_failure", "max_duration")
# Step kinds whose `timeout` may say `none`: they wait (for an event, for a child saga),
# and waiting without a deadline must be said, never implied.
_WAITING_KINDS = ("await", "saga")
_POLICY_KEYS = ("name", "version", "description", "input_schema", "rules", "default")
# JSON Schema keywords that name another schema by URI.
_REF_KEYWORDS = ("$ref", "$dynamicRef")


@dataclass
class ParsedFile:
    """What one file contributed: its models, its outlines, its marks and its problems."""

    path: str
    document: Document | None = None
    kind: Kind | None = None
    sagas: list[Saga] = field(default_factory=list)  # definitions without problems
    events: list[tuple[EventDef, str]] = field(default_factory=list)  # (event, pointer)
    policies: list[Policy] = field(default_factory=list)
    outlines: list[SagaOutline] = field(default_factory=list)  # every saga, for checking
    policy_outlines: list[PolicyOutline] = field(default_factory=list)
    # (kind, name) of definitions left out for problems of their own: a reference to one
    # of them is not also an unknown name.
    broken_names: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, code: str, message: str, pointer: str = "",
                hint: str | None = None, severity: Severity = "error") -> Problem:
        line, col = self.document.locate(pointer) if self.document else (0, 0)
        p = Problem(code, message, self.path, line, col, pointer, hint=hint, severity=severity)
        self.problems.append(p)
        return p

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)


def detect_kind(data: Any) -> Kind | None:
    """Tell a saga, an event (or event domain file) and a policy apart."""
    if not isinstance(data, dict):
        return None
    declared = data.get("kind")
    if declared in ("saga", "policy", "event"):
        return declared  # type: ignore[no-any-return]
    if declared == "events":
        return "event"
    if "steps" in data:
        return "saga"
    if "rules" in data:
        return "policy"
    if "payload_schema" in data or "events" in data:
        return "event"
    return None


def parse_bytes(raw: bytes, path: str) -> ParsedFile:
    """Parse one file's bytes; never raises for bad input, only records problems."""
    parsed = ParsedFile(path)
    try:
        parsed.document = load_yaml_bytes(raw, path)
    except YamlLoadError as exc:
        parsed.problems.append(exc.problem)
        return parsed
    data = parsed.document.data
    kind = detect_kind(data)
    if kind is None:
        if not isinstance(data, dict):
            parsed.problem("not-a-mapping",
                           f"a definition must be a YAML mapping, not {type_name(data)}")
        else:
            parsed.problem("unknown-kind", "cannot tell what this document defines",
                           hint="a saga has `steps`, a policy `rules`, an event "
                                "`payload_schema`; or set `kind: saga|event|policy`")
        return parsed
    parsed.kind = kind
    regions = Regions()
    # Valid documents are accepted quickly; jsonschema explains the others.
    if not is_valid(kind, data):
        _schema_problems(parsed, data, kind, regions)
    if kind == "saga":
        _build_saga(parsed, data, regions)
    elif kind == "policy":
        _build_policy(parsed, data, regions)
    else:
        _build_events(parsed, data, regions)
    return parsed


def parse_file(path: str) -> ParsedFile:
    """Parse the file at ``path``; a FIFO, device or oversized file is never read."""
    try:
        raw = read_regular_file(path)
    except YamlLoadError as exc:
        parsed = ParsedFile(path)
        parsed.problems.append(exc.problem)
        return parsed
    return parse_bytes(raw, path)


def _schema_problems(parsed: ParsedFile, data: Any, kind: Kind, regions: Regions) -> None:
    seen: set[tuple[str, str]] = set()
    for err in sorted(validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path)):
        regions.add_error(err)
        for f in describe(err):
            # jsonschema raises one `required` error per missing key, each carrying the
            # whole list; each missing key is reported once.
            if (f.pointer, f.message) not in seen:
                seen.add((f.pointer, f.message))
                parsed.problem(f.code, f.message, f.pointer, hint=f.hint)


# -- sagas ------------------------------------------------------------------------------------

def _build_saga(parsed: ParsedFile, data: dict[str, Any], regions: Regions) -> None:
    if regions.ok("/input_schema") and not _check_payload_schema(
            parsed, data.get("input_schema"), "/input_schema"):
        regions.add("/input_schema")
    if regions.ok("/defaults") and not _check_durations(parsed, data.get("defaults"),
                                                        "/defaults"):
        regions.add("/defaults")
    if regions.ok("/max_duration") and not _check_durations(parsed, data, ""):
        regions.add("/max_duration")
    raw_steps = data.get("steps") if regions.ok("/steps") else None
    slots = [_step_slot(parsed, raw, i, regions)
             for i, raw in enumerate(raw_steps if isinstance(raw_steps, list) else [])]
    name = data.get("name")
    named = regions.ok("/name") and isinstance(name, str)
    top = {k: data[k] for k in _SAGA_KEYS if k in data and regions.ok(f"/{k}")}
    top.update(name=name if named else "?", version=top.get("version", 0))
    try:
        saga = Saga.model_validate({**top, "steps": [s.step for s in slots if s.step],
                                    "source": parsed.path})
    except (PydanticValidationError, ValueError) as exc:
        _pydantic_problem(parsed, exc, "")
        return
    complete = not parsed.has_errors
    checked = frozenset(k for k in ("on_complete", "on_failure") if regions.ok(f"/{k}"))
    parsed.outlines.append(SagaOutline(saga, tuple(slots), checked))
    if complete:
        parsed.sagas.append(saga)
    elif named:
        parsed.broken_names.append(("saga", str(name)))


def _step_slot(parsed: ParsedFile, raw: Any, index: int, regions: Regions) -> StepSlot:
    base = f"/steps/{index}"
    entry = raw if isinstance(raw, dict) else {}
    name = entry.get("name") if isinstance(entry.get("name"), str) else None
    deps = entry.get("depends_on")
    depends_on = tuple(deps) if isinstance(deps, list) and all(
        isinstance(d, str) for d in deps) else None
    spoiled = set() if regions.ok(base) else regions.spoiled_keys(base)
    if spoiled is None:
        return StepSlot(index, name, depends_on, None)
    sound = {k: v for k, v in entry.items() if k not in spoiled}
    if "name" not in sound or name is None or sum(k in sound for k in STEP_KINDS) != 1:
        return StepSlot(index, name, depends_on, None)
    before = len(parsed.problems)
    if _check_step(parsed, sound, base, spoiled) and not spoiled:
        try:
            return StepSlot(index, name, depends_on, step_from_document(entry))
        except (PydanticValidationError, ValueError) as exc:
            _pydantic_problem(parsed, exc, base)
            return StepSlot(index, name, depends_on, None)
    # Leave out the keys the step's own checks refused too.
    for problem in parsed.problems[before:]:
        if problem.pointer.startswith(base + "/"):
            sound.pop(problem.pointer[len(base) + 1:].split("/")[0], None)
    return StepSlot(index, name, depends_on, _partial_step(sound), partial=True)


def _partial_step(sound: dict[str, Any]) -> Step | None:
    """A step built from its sound keys, for the tree's checks only (never run); None
    when even those do not make one."""
    kind = next(k for k in STEP_KINDS if k in sound)
    data = {k: v for k, v in sound.items() if k in _STEP_KEYS[kind]}
    for _ in range(3):  # each try leaves out the keys the model refused
        try:
            return step_from_document(data)
        except PydanticValidationError as exc:
            refused = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            if not refused or refused & {"name", kind}:
                return None
            data = {k: v for k, v in data.items() if k not in refused}
        except ValueError:
            return None
    return None


def _check_step(parsed: ParsedFile, raw: dict[str, Any], base: str,
                spoiled: set[str] | frozenset[str] = frozenset()) -> bool:
    """The checks of one step that JSON Schema cannot express; ``raw`` holds the keys the
    schema accepted, ``spoiled`` the ones it refused (neither missing nor checked)."""
    ok = True
    kind = next(k for k in STEP_KINDS if k in raw)
    name = quote(raw["name"])
    for key in raw:
        if key not in _STEP_KEYS[kind]:
            parsed.problem("key-not-for-step-kind",
                           f"key {key!r} does not apply to {kind} step {name}",
                           pointer_join(base, key))
            ok = False
    if kind == "action" and not _refused("compensate", spoiled):
        if "compensate" not in raw:
            parsed.problem(
                "missing-compensation",
                f"action step {name} has side effects but names no compensation",
                base, hint="add `compensate: <handler>`, or `compensate: none` with a "
                           "`reason` saying why nothing needs undoing")
            ok = False
        elif raw["compensate"] == "none" and "reason" not in raw and not _refused(
                "reason", spoiled):
            parsed.problem("missing-reason",
                           f"step {name} says `compensate: none` without a reason",
                           pointer_join(base, "compensate"),
                           hint="add `reason:` explaining why nothing needs undoing")
            ok = False
        elif raw["compensate"] != "none" and "reason" in raw:
            parsed.problem("reason-without-none",
                           f"step {name} gives a reason but does compensate",
                           pointer_join(base, "reason"),
                           hint="`reason` explains `compensate: none`; remove it")
            ok = False
    ok = _check_constructs(parsed, raw, base, name) and ok
    if kind == "await" and "timeout" not in raw and not _refused("timeout", spoiled):
        parsed.problem("await-without-timeout",
                       f"await step {name} has no timeout; it could wait forever",
                       base, hint="add `timeout:` (e.g. 30m: then the run compensates, or "
                                  "continues with the step `on_timeout:` names), or "
                                  "`timeout: none` if waiting forever is intended")
        ok = False
    if raw.get("timeout") == "none":
        if kind not in _WAITING_KINDS:
            parsed.problem("timeout-none-not-for-step-kind",
                           f"{kind} step {name} says `timeout: none`; only a step that "
                           "waits (an await, a child saga) may wait without a deadline",
                           pointer_join(base, "timeout"),
                           hint="give a duration (e.g. 30s), or leave `timeout` out")
            return False
        if raw.get("on_timeout", "compensate") != "compensate":
            parsed.problem("on-timeout-without-timeout",
                           f"step {name} says `timeout: none` and names an `on_timeout`, "
                           "which would never happen", pointer_join(base, "on_timeout"),
                           hint="give a duration, or remove `on_timeout`")
            return False
        raw = {k: v for k, v in raw.items() if k != "timeout"}
    return _check_durations(parsed, raw, base) and ok


def _refused(key: str, spoiled: set[str] | frozenset[str]) -> bool:
    """Whether the schema refused ``key`` or a misspelling of it (``compensation:`` for
    ``compensate:``): then the key is not missing, it is wrong, as already reported."""
    return key in spoiled or any(suggest(k, [key]) for k in spoiled)


def _check_constructs(parsed: ParsedFile, raw: dict[str, Any], base: str, name: str) -> bool:
    """Fan-out keys only beside ``for_each``; names the engine reserves left alone."""
    ok = True
    if "for_each" not in raw:
        for key in _FAN_OUT_KEYS:
            if key in raw:
                parsed.problem("needs-for-each", f"key {key!r} of step {name} only applies "
                               "with `for_each`", pointer_join(base, key),
                               hint="add `for_each: <list expression>` or remove it")
                ok = False
    if "for_each" in raw and "emit_on_compensate" in raw:
        parsed.problem("key-not-for-fan-out", f"step {name} fans out: a fan-out's "
                       "compensation runs once per item, so it emits no events of its own",
                       pointer_join(base, "emit_on_compensate"),
                       hint="emit from a later step, or from on_failure")
        ok = False
    if raw.get("as") in RESERVED_NAMES:
        parsed.problem("reserved-name", f"step {name} names its item {raw['as']!r}, which "
                       "expressions already use", pointer_join(base, "as"),
                       hint="pick another name, e.g. the singular of the list's name")
        ok = False
    for i, clause in enumerate(raw.get("catch") or []):
        if isinstance(clause, dict) and "error" in (clause.get("result") or {}):
            parsed.problem("reserved-name", f"the catch result of step {name} sets `error`, "
                           "which holds the caught error", pointer_join(
                               base, "catch", i, "result", "error"),
                           hint="name the key otherwise; `error` is added by the engine")
            ok = False
    return ok


# -- policies and events -------------------------------------------------------------------

def _build_policy(parsed: ParsedFile, data: dict[str, Any], regions: Regions) -> None:
    if regions.ok("/input_schema") and not _check_payload_schema(
            parsed, data.get("input_schema"), "/input_schema"):
        regions.add("/input_schema")
    rules: list[tuple[int, Rule]] = []
    raw_rules = data.get("rules") if regions.ok("/rules") else None
    for i, raw in enumerate(raw_rules if isinstance(raw_rules, list) else []):
        if regions.ok(f"/rules/{i}"):
            try:
                rules.append((i, Rule.model_validate(raw)))
            except (PydanticValidationError, ValueError) as exc:
                _pydantic_problem(parsed, exc, f"/rules/{i}")
    default = data.get("default") if regions.ok("/default") else None
    default_reason = default.get("reason") if isinstance(default, dict) else None
    name = data.get("name")
    named = regions.ok("/name") and isinstance(name, str)
    policy = None
    if not parsed.has_errors:
        try:
            policy = Policy.model_validate(
                {**{k: data[k] for k in _POLICY_KEYS if k in data}, "source": parsed.path})
        except (PydanticValidationError, ValueError) as exc:
            _pydantic_problem(parsed, exc, "")
    if policy is not None:
        parsed.policies.append(policy)
    elif named:
        parsed.broken_names.append(("policy", str(name)))
    parsed.policy_outlines.append(PolicyOutline(
        str(name) if named else "?", parsed.path, tuple(rules),
        default_reason if isinstance(default_reason, str) else None, policy))


def _build_events(parsed: ParsedFile, data: dict[str, Any], regions: Regions) -> None:
    listed = data.get("events")
    if "events" in data and not (isinstance(listed, list) and regions.ok("/events")):
        return
    entries = ([(e, f"/events/{i}") for i, e in enumerate(listed)] if isinstance(listed, list)
               else [(data, "")])
    for raw, pointer in entries:
        good = regions.ok(pointer) if pointer else not regions
        if good and not _check_payload_schema(parsed, raw["payload_schema"],
                                              pointer + "/payload_schema"):
            good = False
        if good:
            try:
                event = EventDef.model_validate({**{k: v for k, v in raw.items() if k != "kind"},
                                                 "file": parsed.path})
            except (PydanticValidationError, ValueError) as exc:
                _pydantic_problem(parsed, exc, pointer)
            else:
                parsed.events.append((event, pointer))
                continue
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            parsed.broken_names.append(("event", name))


# -- values that load but cannot run ---------------------------------------------------------

def _check_payload_schema(parsed: ParsedFile, schema: Any, pointer: str) -> bool:
    if not isinstance(schema, dict) or not is_full_json_schema(schema):
        return True
    ok = True
    for where, ref in _references(schema, pointer):
        # Only the document itself: a remote or file reference would be fetched (or fail)
        # when a payload is checked, far from the definition that caused it.
        if not ref.startswith("#"):
            parsed.problem("external-ref", f"{quote(ref)} refers outside this schema; only "
                           "references within it (starting with #) are allowed", where,
                           hint="copy the referenced schema under $defs and refer to "
                                "#/$defs/<name>")
            ok = False
    if not ok:
        return False
    from jsonschema import Draft202012Validator

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        sub = pointer_join("", *exc.absolute_path)
        parsed.problem("bad-payload-schema", f"not a valid JSON Schema: {cut(exc.message)}",
                       pointer + sub)
        return False
    return True


def _references(value: Any, pointer: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            child = pointer_join(pointer, key)
            if key in _REF_KEYWORDS and isinstance(item, str):
                yield child, item
            else:
                yield from _references(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _references(item, pointer_join(pointer, i))


def _durations(holder: Any, base: str) -> Iterator[tuple[str, Any]]:
    """(pointer, value) of every duration in a step or ``defaults`` mapping."""
    if not isinstance(holder, dict):
        return
    for key in ("timeout", "max_duration"):
        if key in holder:
            yield pointer_join(base, key), holder[key]
    for key in ("retry", "compensation_retry"):
        backoff = holder.get(key, {}).get("backoff") if isinstance(holder.get(key),
                                                                    dict) else None
        if isinstance(backoff, dict):
            for name in ("initial", "max"):
                if name in backoff:
                    yield pointer_join(base, key, "backoff", name), backoff[name]


def _check_durations(parsed: ParsedFile, holder: Any, base: str) -> bool:
    ok = True
    for pointer, value in _durations(holder, base):
        try:
            parse_duration(value)
        except (ValueError, TypeError) as exc:
            parsed.problem("bad-duration", str(exc), pointer)
            ok = False
    return ok


def _pydantic_problem(parsed: ParsedFile, exc: Exception, base: str) -> None:
    if isinstance(exc, PydanticValidationError):
        for err in exc.errors():
            loc = pointer_join("", *err["loc"])
            parsed.problem("invalid", err["msg"], base + loc)
    else:
        parsed.problem("invalid", str(exc), base)
