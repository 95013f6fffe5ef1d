"""One definition file → located problems and frozen models.

Steps: safe YAML load (with marks) → tell the kind of document → JSON Schema validation
with messages rewritten to say what to do → per-kind semantic checks that need no other
file → pydantic models. Cross-file checks belong to :mod:`concordia.definitions.catalog`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from jsonschema import ValidationError
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError as PydanticValidationError

from concordia.definitions.durations import parse_duration
from concordia.definitions.models import EventDef, Policy, Saga, step_from_document
from concordia.definitions.payload import is_full_json_schema
from concordia.definitions.problems import Problem, pointer_join
from concordia.definitions.schema import Kind, fast_validator, validator
from concordia.definitions.yamlsafe import Document, YamlLoadError, load_yaml_bytes

# Keys that only make sense on one kind of step.
_STEP_KEYS: dict[str, set[str]] = {
    "action": {"name", "description", "depends_on", "emit", "timeout", "action", "compensate",
               "reason", "retry", "compensation_retry", "emit_on_compensate"},
    "await": {"name", "description", "depends_on", "emit", "timeout", "await", "match",
              "on_timeout", "version"},
    "policy": {"name", "description", "depends_on", "emit", "timeout", "policy", "version",
               "input"},
}


@dataclass
class ParsedFile:
    """What one file contributed: its models, its marks and its own problems."""

    path: str
    document: Document | None = None
    kind: Kind | None = None
    sagas: list[Saga] = field(default_factory=list)
    events: list[tuple[EventDef, str]] = field(default_factory=list)  # (event, pointer)
    policies: list[Policy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, code: str, message: str, pointer: str = "",
                hint: str | None = None, severity: str = "error") -> Problem:
        line, col = self.document.locate(pointer) if self.document else (0, 0)
        p = Problem(code, message, self.path, line, col, pointer, hint=hint,
                    severity=severity)  # type: ignore[arg-type]
        self.problems.append(p)
        return p


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
                           f"a definition must be a YAML mapping, not {_type_name(data)}")
        else:
            parsed.problem("unknown-kind", "cannot tell what this document defines",
                           hint="a saga has `steps`, a policy `rules`, an event "
                                "`payload_schema`; or set `kind: saga|event|policy`")
        return parsed
    parsed.kind = kind
    # The compiled validator accepts valid documents quickly; jsonschema explains the others.
    errors = [] if fast_validator(kind).is_valid(data) else sorted(
        validator(kind).iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        for err in errors:
            _schema_problem(parsed, err)
        return parsed
    if kind == "saga":
        _build_saga(parsed, data)
    elif kind == "policy":
        _build_policy(parsed, data)
    else:
        _build_events(parsed, data)
    return parsed


def parse_file(path: str) -> ParsedFile:
    from concordia.definitions.yamlsafe import MAX_BYTES

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        parsed = ParsedFile(path)
        parsed.problems.append(Problem("unreadable", f"cannot read file: {exc.strerror}", path))
        return parsed
    return parse_bytes(raw, path)


# -- JSON Schema errors, rewritten to say what to do ---------------------------------------

def _schema_problem(parsed: ParsedFile, err: ValidationError) -> None:
    pointer = "".join(pointer_join("", p) for p in err.absolute_path)
    where = _field_name(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted((err.schema.get("properties") or {}).keys())  # type: ignore[union-attr]
        extras = [k for k in err.instance if k not in allowed] if isinstance(
            err.instance, dict) else []
        for key in extras:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"allowed keys: {', '.join(allowed)}" if allowed else None)
            parsed.problem("unknown-key", f"unknown key {key!r} in {where}",
                           pointer_join(pointer, key), hint=hint)
        return
    if v == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict)  # type: ignore[union-attr]
                   and k not in err.instance]
        # jsonschema raises one error per missing key, each carrying the whole list.
        reported = {p.message for p in parsed.problems
                    if p.code == "missing-key" and p.pointer == pointer}
        for key in missing:
            message = f"{where} is missing required key {key!r}"
            if message not in reported:
                parsed.problem("missing-key", message, pointer)
        return
    if v == "oneOf" and list(err.absolute_path)[:1] == ["steps"] and len(
            err.absolute_path) == 2:
        if not isinstance(err.instance, dict):
            return  # reported as a wrong type; no kind of step can be told apart
        name = err.instance.get("name", f"#{int(err.absolute_path[1]) + 1}")
        kinds = [k for k in ("action", "await", "policy") if k in err.instance]
        msg = (f"step {name!r} has {' and '.join(kinds)}; a step is exactly "
               "one of action, await or policy") if kinds else (
            f"step {name!r} needs one of action, await or policy")
        parsed.problem("bad-step-kind", msg, pointer)
        return
    if v == "type":
        parsed.problem("wrong-type", f"{where} must be {_expected(err.validator_value)}, "
                       f"not {_type_name(err.instance)}", pointer)
        return
    if v in ("enum", "const"):
        options = err.validator_value if v == "enum" else [err.validator_value]
        close = difflib.get_close_matches(str(err.instance), [str(o) for o in options], n=1)  # type: ignore[union-attr]
        parsed.problem("bad-value", f"{where} is {err.instance!r}; expected one of "
                       f"{', '.join(repr(o) for o in options)}", pointer,  # type: ignore[union-attr]
                       hint=f"did you mean {close[0]!r}?" if close else None)
        return
    if v == "pattern" and "propertyNames" in err.schema_path:
        # jsonschema reports a bad key at its parent mapping; point at the key itself.
        parsed.problem("bad-name", f"key {err.instance!r} in {where} must be an identifier "
                       "(letters, digits and _, not starting with a digit)",
                       pointer_join(pointer, str(err.instance)))
        return
    if v == "pattern":
        parsed.problem("bad-name", f"{where} {err.instance!r} does not match "
                       f"{_pattern_words(err.validator_value)}", pointer)
        return
    if v == "oneOf" and err.schema.get("description", "").startswith("A duration"):  # type: ignore[union-attr]
        parsed.problem("bad-duration", f"{where} {err.instance!r} is not a duration",
                       pointer, hint="write e.g. 250ms, 30s, 5m, 2h, 1d or a number of seconds")
        return
    parsed.problem("schema", f"{where}: {err.message}", pointer)


def _field_name(path: Any) -> str:
    parts = [str(p) for p in path]
    return "`" + ".".join(parts) + "`" if parts else "the document"


def _expected(value: Any) -> str:
    names: dict[str, str] = {"object": "a mapping", "array": "a list", "string": "a string",
             "integer": "an integer", "number": "a number", "boolean": "true or false"}
    if isinstance(value, list):
        return " or ".join(names.get(str(v), str(v)) for v in value)
    return names.get(value, str(value))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _pattern_words(pattern: Any) -> str:
    if pattern == r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){2,}$":
        return "domain.entity.action (lowercase, at least three dot-separated segments)"
    if pattern == r"^[a-z][a-z0-9_]*$":
        return "a lowercase identifier (a-z, 0-9, _)"
    if pattern == r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$":
        return "a handler name (lowercase identifiers joined by dots, e.g. billing.charge)"
    if pattern.startswith(r"^(\d+"):
        return "a duration such as 250ms, 30s, 5m, 2h or 1d"
    return f"the pattern {pattern}"


# -- per-kind checks and models ---------------------------------------------------------------

def _build_saga(parsed: ParsedFile, data: dict[str, Any]) -> None:
    ok = _check_payload_schema(parsed, data.get("input_schema"), "/input_schema")
    steps = []
    for i, raw in enumerate(data["steps"]):
        base = f"/steps/{i}"
        kind = next(k for k in ("action", "await", "policy") if k in raw)
        for key in raw:
            if key not in _STEP_KEYS[kind]:
                parsed.problem("key-not-for-step-kind",
                               f"key {key!r} does not apply to {kind} step {raw['name']!r}",
                               pointer_join(base, key))
                ok = False
        if kind == "action":
            if "compensate" not in raw:
                parsed.problem(
                    "missing-compensation",
                    f"action step {raw['name']!r} has side effects but names no compensation",
                    base, hint="add `compensate: <handler>`, or `compensate: none` with a "
                               "`reason` saying why nothing needs undoing")
                ok = False
            elif raw["compensate"] == "none" and "reason" not in raw:
                parsed.problem("missing-reason",
                               f"step {raw['name']!r} says `compensate: none` without a reason",
                               pointer_join(base, "compensate"),
                               hint="add `reason:` explaining why nothing needs undoing")
                ok = False
            elif raw["compensate"] != "none" and "reason" in raw:
                parsed.problem("reason-without-none",
                               f"step {raw['name']!r} gives a reason but does compensate",
                               pointer_join(base, "reason"),
                               hint="`reason` explains `compensate: none`; remove it")
                ok = False
        if kind == "await" and "timeout" not in raw:
            parsed.problem("await-without-timeout",
                           f"await step {raw['name']!r} has no timeout; it could wait forever",
                           base, hint="add `timeout:` (e.g. 30m) and `on_timeout:`")
            ok = False
        for dkey in ("timeout",):
            if dkey in raw:
                ok &= _check_duration(parsed, raw[dkey], pointer_join(base, dkey))
        steps.append(raw)
    if not ok:
        return
    try:
        built = [step_from_document(s) for s in steps]
        saga = Saga.model_validate({**{k: v for k, v in data.items() if k not in ("steps", "kind")},
                                    "steps": built, "source": parsed.path})
    except (PydanticValidationError, ValueError) as exc:
        _pydantic_problem(parsed, exc, "")
        return
    parsed.sagas.append(saga)


def _build_policy(parsed: ParsedFile, data: dict[str, Any]) -> None:
    if not _check_payload_schema(parsed, data.get("input_schema"), "/input_schema"):
        return
    try:
        policy = Policy.model_validate({**{k: v for k, v in data.items() if k != "kind"},
                                        "source": parsed.path})
    except (PydanticValidationError, ValueError) as exc:
        _pydantic_problem(parsed, exc, "")
        return
    parsed.policies.append(policy)


def _build_events(parsed: ParsedFile, data: dict[str, Any]) -> None:
    entries = ([(e, f"/events/{i}") for i, e in enumerate(data["events"])]
               if "events" in data else [(data, "")])
    for raw, pointer in entries:
        if not _check_payload_schema(parsed, raw["payload_schema"],
                                     pointer + "/payload_schema"):
            continue
        try:
            event = EventDef.model_validate({**{k: v for k, v in raw.items() if k != "kind"},
                                             "file": parsed.path})
        except (PydanticValidationError, ValueError) as exc:
            _pydantic_problem(parsed, exc, pointer)
            continue
        parsed.events.append((event, pointer))


def _check_payload_schema(parsed: ParsedFile, schema: Any, pointer: str) -> bool:
    if schema is None or not is_full_json_schema(schema):
        return True
    from jsonschema import Draft202012Validator

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        sub = "".join(pointer_join("", p) for p in exc.absolute_path)
        parsed.problem("bad-payload-schema", f"not a valid JSON Schema: {exc.message}",
                       pointer + sub)
        return False
    return True


def _check_duration(parsed: ParsedFile, value: Any, pointer: str) -> bool:
    try:
        parse_duration(value)
    except ValueError as exc:
        parsed.problem("bad-duration", str(exc), pointer)
        return False
    return True


def _pydantic_problem(parsed: ParsedFile, exc: Exception, base: str) -> None:
    if isinstance(exc, PydanticValidationError):
        for err in exc.errors():
            loc = "".join(pointer_join("", p) for p in err["loc"])
            parsed.problem("invalid", err["msg"], base + loc)
    else:
        parsed.problem("invalid", str(exc), base)
