"""Frozen pydantic models of validated sagas, events and policies.

Raw dicts stop at the border: a document is checked against its JSON Schema, then turned
into these models, and nothing past the catalog sees YAML data again. Durations are
seconds (float); payload and input schemas are already compiled to JSON Schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from concordia.definitions.durations import parse_duration
from concordia.definitions.payload import to_json_schema

Decision = Literal["approve", "reject"]
Reliability = Literal["persistent", "transient"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _seconds(value: Any) -> Any:
    return None if value is None else parse_duration(value)


class Backoff(_Model):
    """Exponential backoff between attempts: ``initial * factor**(n-1)``, capped, jittered."""

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1

    _dur = field_validator("initial", "max", mode="before")(_seconds)


class RetryPolicy(_Model):
    """How often a step (or its compensation) is tried and which errors are worth it."""

    attempts: int = 1
    backoff: Backoff = Backoff()
    # Error class names (matched against the raised exception's class hierarchy). `*`
    # means every error; names are only compared, never imported.
    retryable: tuple[str, ...] = ("*",)
    non_retryable: tuple[str, ...] = ()


DEFAULT_RETRY = RetryPolicy()
DEFAULT_COMPENSATION_RETRY = RetryPolicy(attempts=5, backoff=Backoff(initial=1.0, max=60.0))


class Emit(_Model):
    """An event to emit, with its payload mapped by CEL expressions."""

    event: str
    version: int | None = None
    payload: dict[str, str] = Field(default_factory=dict)


class Defaults(_Model):
    retry: RetryPolicy | None = None
    compensation_retry: RetryPolicy | None = None
    timeout: float | None = None

    _dur = field_validator("timeout", mode="before")(_seconds)


class Trigger(_Model):
    """An event that starts the saga; ``input`` maps the event onto the run's input."""

    event: str
    version: int | None = None
    input: dict[str, str] | None = None


class _StepBase(_Model):
    name: str
    description: str = ""
    depends_on: tuple[str, ...] | None = None
    emit: tuple[Emit, ...] = ()
    timeout: float | None = None
    # `if:` in YAML: a CEL condition; false skips the step.
    if_: str | None = Field(default=None, alias="if")

    _dur = field_validator("timeout", mode="before")(_seconds)


class CatchClause(_Model):
    """One entry of an action's catch table: which errors, where the run goes on, and the
    step's result when caught."""

    errors: tuple[str | int, ...]
    goto: str = "continue"
    result: dict[str, str] = Field(default_factory=dict)


FanOutMode = Literal["all", "best_effort"]


class ActionStep(_StepBase):
    """Runs a registered handler; names the compensation that undoes it, or says why none."""

    kind: Literal["action"] = "action"
    action: str
    compensate: str | None = None  # handler name, or None when `compensate: none`
    compensate_none: bool = False
    reason: str | None = None
    retry: RetryPolicy | None = None
    compensation_retry: RetryPolicy | None = None
    emit_on_compensate: tuple[Emit, ...] = ()
    catch: tuple[CatchClause, ...] = ()
    # Fan-out: the CEL list the handler runs over, one item at a time or `concurrency`.
    for_each: str | None = None
    as_: str = Field(default="item", alias="as")
    concurrency: int = 1
    mode: FanOutMode = "all"
    # `checkpoints: true`: its handler checkpoints (``ctx.checkpoint``) before its side
    # effect, so an attempt that fails after the effect is still compensated.
    checkpoints: bool = False

    def handlers(self) -> Iterator[tuple[str, str]]:
        """The handler names it uses: (``action``|``compensation``, name)."""
        yield "action", self.action
        if self.compensate:
            yield "compensation", self.compensate

    @property
    def compensable(self) -> bool:
        return self.compensate is not None


class AwaitStep(_StepBase):
    """Suspends the run until a matching event arrives or its timer fires."""

    kind: Literal["await"] = "await"
    event: str
    version: int | None = None
    match: str | None = None
    on_timeout: str = "compensate"
    # `timeout: none`: the step waits for its event without a deadline, on purpose.
    timeout_none: bool = False

    @property
    def compensable(self) -> bool:
        return False


class PolicyStep(_StepBase):
    """Evaluates a policy; a rejection fails the run and compensates."""

    kind: Literal["policy"] = "policy"
    policy: str
    version: int | None = None
    input: dict[str, str] = Field(default_factory=dict)

    @property
    def compensable(self) -> bool:
        return False


class SagaStep(_StepBase):
    """Runs another saga as a child run and waits for its end; undone by the child's own
    compensations."""

    kind: Literal["saga"] = "saga"
    saga: str
    version: int | None = None
    input: dict[str, str] | None = None  # None: the child gets this run's input
    catch: tuple[CatchClause, ...] = ()
    # `timeout: none`: the step waits for the child's end without a deadline, on purpose.
    timeout_none: bool = False

    @property
    def compensable(self) -> bool:
        return True


Step = ActionStep | AwaitStep | PolicyStep | SagaStep


class Saga(_Model):
    """A validated saga definition (one version)."""

    name: str
    version: int
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    trigger: Trigger | None = None
    defaults: Defaults = Defaults()
    steps: tuple[Step, ...]
    on_complete: tuple[Emit, ...] = ()
    on_failure: tuple[Emit, ...] = ()
    # The longest a run may take, every retry, wait and timeout counted (`concordia prove`
    # checks it against the worst case of every path it explores).
    max_duration: float | None = None
    source: str = ""

    _dur = field_validator("max_duration", mode="before")(_seconds)

    @field_validator("input_schema", mode="before")
    @classmethod
    def _compile_input(cls, value: Any) -> Any:
        return to_json_schema(value)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)


class EventDef(_Model):
    """A taxonomy entry: one version of one event type."""

    name: str
    version: int
    description: str = ""
    payload_schema: dict[str, Any]
    reliability: Reliability
    source_name: str | None = Field(default=None, alias="source")
    deprecated: bool = False
    file: str = ""

    @field_validator("payload_schema", mode="before")
    @classmethod
    def _compile_payload(cls, value: Any) -> Any:
        return to_json_schema(value)

    def field_names(self) -> tuple[set[str], set[str], bool]:
        """(all declared fields, required fields, whether other fields are allowed)."""
        props = self.payload_schema.get("properties", {})
        required = set(self.payload_schema.get("required", []))
        open_ = self.payload_schema.get("additionalProperties", True) is not False
        return set(props), required, open_


class Rule(_Model):
    name: str
    when: str
    decision: Decision
    reason: str


class DefaultDecision(_Model):
    decision: Decision
    reason: str


class Policy(_Model):
    """Ordered rules (first match wins) and a default decision."""

    name: str
    version: int
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    rules: tuple[Rule, ...]
    default: DefaultDecision
    source: str = ""

    @field_validator("input_schema", mode="before")
    @classmethod
    def _compile_input(cls, value: Any) -> Any:
        return to_json_schema(value)

    @property
    def can_reject(self) -> bool:
        return self.default.decision == "reject" or any(
            r.decision == "reject" for r in self.rules
        )


def step_from_document(data: dict[str, Any]) -> Step:
    """Build the right step model from a schema-valid step mapping."""
    data = dict(data)
    if "action" in data:
        comp = data.get("compensate")
        if comp == "none":
            data["compensate"] = None
            data["compensate_none"] = True
        return ActionStep.model_validate(data)
    if data.get("timeout") == "none" and ("await" in data or "saga" in data):
        del data["timeout"]
        data["timeout_none"] = True
    if "await" in data:
        data["event"] = data.pop("await")
        return AwaitStep.model_validate(data)
    if "saga" in data:
        return SagaStep.model_validate(data)
    return PolicyStep.model_validate(data)
