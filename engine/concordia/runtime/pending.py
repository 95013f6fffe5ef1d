"""The commit a pass over a run accumulates (and takes as a
:class:`~concordia.store.changes.Commit`), and the JSON helpers it relies on."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from concordia.store.changes import Commit, Patch
from concordia.store.records import (
    Attempted,
    AwaitRecord,
    HistoryEntry,
    ItemKey,
    ItemRecord,
    RunRecord,
    StepRecord,
)
from concordia.values import check_value, clean_text


@dataclass(slots=True)
class Pending:
    """The commit being accumulated for one run."""

    run: RunRecord
    steps: dict[str, StepRecord] = field(default_factory=dict)
    items: dict[ItemKey, ItemRecord] = field(default_factory=dict)
    history: list[HistoryEntry] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    awaits_add: list[AwaitRecord] = field(default_factory=list)
    awaits_remove: list[tuple[str, str]] = field(default_factory=list)
    consume: list[str] = field(default_factory=list)
    buffered_seen: list[str] = field(default_factory=list)
    also: list[Patch] = field(default_factory=list)  # see Commit.also
    dirty: bool = False

    def touch(self, rec: Attempted) -> None:
        """Write ``rec`` (a step's record or an item's) with the next commit."""
        if type(rec) is StepRecord:
            self.steps[rec.name] = rec
        else:
            assert isinstance(rec, ItemRecord)
            self.items[(rec.step, rec.index)] = rec
        self.dirty = True

    def take(self, now: float) -> tuple[Commit, list[dict[str, Any]]]:
        """The transition accumulated so far as a commit (at the revision the run was read
        at), and its transient events to publish once it is written; starts afresh."""
        run = self.run
        run.updated_at = now
        commit = Commit(run=run, steps=list(self.steps.values()),
                        items=list(self.items.values()), history=self.history,
                        events=self.events, decisions=self.decisions,
                        awaits_add=self.awaits_add, awaits_remove=self.awaits_remove,
                        consume_buffered=self.consume, buffered_seen=self.buffered_seen,
                        expect_rev=run.rev, also=self.also)
        transient = [e["envelope"] for e in self.events if not e["persistent"]]
        self.steps, self.history, self.events, self.decisions = {}, [], [], []
        if self.items:
            self.items = {}
        self.awaits_add, self.awaits_remove, self.consume = [], [], []
        self.buffered_seen = []
        if self.also:
            self.also = []
        self.dirty = False
        return commit, transient

    def note(self, at: float, kind: str, step: str | None = None, attempt: int | None = None,
             **detail: Any) -> None:
        self.history.append(HistoryEntry(self.run.id, at, kind, step, attempt, detail))
        self.dirty = True


def utc(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def json_copy(value: Any) -> Any:
    """A JSON round trip: proves the value is serialisable and detaches it from the caller."""
    return json.loads(json.dumps(value, allow_nan=False))


def journal_value(value: Any, what: str) -> Any:
    """``value`` made fit for the journal: a detached JSON copy within the value limits.

    Raises :class:`~concordia.errors.ValueLimitError` (naming ``what`` and where in the
    value) for anything that is not plain JSON or is out of bounds (NaN and infinities,
    other types, values too deep or too large), before the JSON encoder or the expression
    library ever sees it.
    """
    check_value(value, what)
    return detach(value)


def detach(value: Any) -> Any:
    """A copy of checked JSON data as the journal holds it: tuples become lists, string and
    number subclasses (enums) their plain values. Recursion is bounded by the depth
    limit ``check_value`` enforced."""
    kind = type(value)
    if kind is dict:
        return {k if type(k) is str else str(k): detach(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [detach(v) for v in value]
    if kind in _SCALARS:
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return json_copy(value)  # anything else check_value let through: JSON decides


_SCALARS = (str, int, float, bool, type(None))


def journal_clone(value: Any) -> Any:
    """A handler's own copy of a journaled value (``None`` stays as it is, for free)."""
    return None if value is None else json_clone(value)


def json_clone(value: Any) -> Any:
    """A deep copy of a journaled (JSON) value for a handler, so it cannot change the
    journal; several times faster than ``copy.deepcopy`` on dicts, lists and scalars,
    which is all the journal holds (anything else still goes to ``copy.deepcopy``)."""
    kind = type(value)
    if kind is dict:
        return {k: json_clone(v) for k, v in value.items()}
    if kind is list:
        return [json_clone(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


# The most of an error's message the journal keeps (it is written on the step, the run
# and a history line): a handler's exception may carry any amount of text.
MAX_ERROR_TEXT = 16_384


def describe(error: BaseException) -> str:
    """An error as the journal records it: its class name and (the start of) its message.

    A handler's exception is the handler's own failure even when its ``str()`` fails. What
    the journal does not keep (NUL, lone surrogates: a message may quote the value that
    caused it) is replaced by U+FFFD, so recording a failure never fails.
    """
    name = clean_text(type(error).__name__)
    try:
        text = str(error)
    except Exception as exc:
        return f"{name} (its message could not be read: {type(exc).__name__})"
    if len(text) > MAX_ERROR_TEXT:
        text = f"{text[:MAX_ERROR_TEXT]}... ({len(text) - MAX_ERROR_TEXT} more characters)"
    return f"{name}: {clean_text(text)}" if text else name
