"""Poison runs for ``test_poison``: one saga per fault, beside a healthy saga, and handlers.

Each poison saga does a healthy ``prep`` step first (so a failure has something to
compensate), then its faulty step. The faults: an emit mapping and a policy input that
raise (``items[0]`` of an empty list), a 100,000-deep result, a NaN result, an async
handler raising ``TimeoutError`` itself (no step timeout), a custom ``BaseException``
(sync and async), an exception with a 30 MiB message and one whose message cannot be
read, an error message and a result holding a NUL character (which PostgreSQL refuses),
``KeyboardInterrupt`` and ``SystemExit``, an async handler that blocks its loop past
its step timeout, and three hanging sync handlers in parallel (more than a small handler
pool holds) with short timeouts.

How long the blocking and hanging handlers take is read from the run's input
(``seconds``), so the same sagas serve the in-process tests (short) and the worker
processes (long enough for the loop watchdog and a saturated pool).

Worker processes load this module with ``--handlers tests.runtime.poison``; there every
handler call appends a line (run, step, phase, attempt, start time) to the side log named
by ``$POISON_SIDE_LOG``. In-process tests build a registry that records into a list.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from concordia.registry import Registry
from tests.runtime.workers import SideLog

Record = Callable[[dict[str, Any]], None]

HEALTHY = "steady"
DEEP = 100_000

TAXONOMY = """
events:
  - name: proof.item.first
    version: 1
    reliability: persistent
    payload_schema:
      first: {type: string, required: true}
"""

POLICY = """
name: proof_gate
version: 1
input_schema:
  first: {type: string, required: true}
rules:
  - name: stop_word
    when: input.first == "stop"
    decision: reject
    reason: "told to stop"
default:
  decision: approve
  reason: "nothing against it"
"""

STEADY = """
name: steady
version: 1
steps:
  - {name: one, action: steady.one, compensate: steady.undo_one}
  - {name: two, action: steady.two, compensate: steady.undo_two}
"""

_PREP = "  - {name: prep, action: poison.prep, compensate: poison.unprep}\n"


def _poison(name: str, steps: str) -> str:
    return f"name: {name}\nversion: 1\nsteps:\n{_PREP}{steps}"


SAGAS = {
    "emit_expression": _poison("emit_expression", """\
  - name: load
    action: poison.load
    compensate: poison.unload
    emit:
      - event: proof.item.first
        payload: {first: "results.load.items[0]"}
"""),
    "policy_expression": _poison("policy_expression", """\
  - name: gate
    policy: proof_gate
    input: {first: "results.prep.items[0]"}
"""),
    "deep_result": _poison("deep_result", """\
  - {name: deep, action: poison.deep, compensate: poison.undo}
"""),
    "nan_result": _poison("nan_result", """\
  - {name: nan, action: poison.nan, compensate: poison.undo}
"""),
    # No step timeout: the TimeoutError is the handler's own, an ordinary (retried) failure.
    "own_timeout": _poison("own_timeout", """\
  - name: upstream
    action: poison.own_timeout
    compensate: poison.undo
    retry: {attempts: 2, retryable: [TimeoutError], backoff: {initial: 10ms, jitter: 0}}
"""),
    "base_exception": _poison("base_exception", """\
  - {name: melt_sync, action: poison.melt_sync, compensate: poison.undo, depends_on: [prep]}
  - {name: melt_async, action: poison.melt_async, compensate: poison.undo,
     depends_on: [prep]}
"""),
    # More text than the journal holds for a value, as an exception's message.
    "huge_message": _poison("huge_message", """\
  - {name: boom, action: poison.boom, compensate: poison.undo}
"""),
    # An exception whose message cannot be read: still the handler's failure, retried.
    "unprintable": _poison("unprintable", """\
  - name: mute
    action: poison.mute
    compensate: poison.undo
    retry: {attempts: 2, backoff: {initial: 10ms, jitter: 0}}
"""),
    # An error message quoting text no store keeps as it is (PostgreSQL refuses NUL):
    # recorded cleaned, an ordinary failure, never a commit refused in a loop.
    "nul_error": _poison("nul_error", """\
  - {name: quote, action: poison.quote, compensate: poison.undo}
"""),
    # A result holding such text: refused as a value, the step fails without retry.
    "nul_result": _poison("nul_result", """\
  - {name: spill, action: poison.spill, compensate: poison.undo}
"""),
    "keyboard_interrupt": _poison("keyboard_interrupt", """\
  - {name: ctrl_c, action: poison.ctrl_c, compensate: poison.undo}
"""),
    "system_exit": _poison("system_exit", """\
  - {name: exit, action: poison.exit, compensate: poison.undo}
"""),
    "blocked_loop": _poison("blocked_loop", """\
  - {name: block, action: poison.block, compensate: poison.undo, timeout: 200ms}
"""),
    # Three hanging calls at once per run, each attempt retried once.
    "saturated_pool": _poison("saturated_pool", "".join(f"""\
  - name: hang{i}
    action: poison.hang
    compensate: poison.undo
    depends_on: [prep]
    timeout: 200ms
    retry: {{attempts: 2, backoff: {{initial: 10ms, jitter: 0}}}}
""" for i in range(3))),
}


@dataclass(frozen=True)
class Fault:
    """What a poison saga's run must end as: its status, the steps that failed, and a
    fragment of the error the run and those steps record."""

    saga: str
    steps: tuple[str, ...]
    error: str
    status: str = "compensated"
    stops_worker: bool = False  # KeyboardInterrupt / SystemExit stop the worker
    attempts: int = 1  # how often each faulty step is called
    # Steps whose compensation must have run, in order (``prep`` always, last).
    undone: tuple[str, ...] = ("prep",)


FAULTS = {f.saga: f for f in (
    Fault("emit_expression", ("load",), "ExpressionError", undone=("load", "prep")),
    Fault("policy_expression", ("gate",), "ExpressionError", attempts=0),  # no handler
    Fault("deep_result", ("deep",), "ValueLimitError"),
    Fault("nan_result", ("nan",), "ValueLimitError"),
    Fault("own_timeout", ("upstream",), "TimeoutError: upstream gave up", attempts=2),
    Fault("base_exception", ("melt_sync", "melt_async"), "Meltdown: core breach"),
    Fault("huge_message", ("boom",), "Enormous: xxxxxxxx"),
    Fault("unprintable", ("mute",), "Unprintable", attempts=2),
    Fault("nul_error", ("quote",), "ValueError: cannot process a\ufffdb"),
    Fault("nul_result", ("spill",), "ValueLimitError"),
    Fault("keyboard_interrupt", ("ctrl_c",), "KeyboardInterrupt", stops_worker=True),
    Fault("system_exit", ("exit",), "SystemExit", stops_worker=True),
    Fault("blocked_loop", ("block",), "over its timeout of 0.2s"),
    Fault("saturated_pool", ("hang0", "hang1", "hang2"), "exceeded its timeout of 0.2s",
          attempts=2),
)}


def documents() -> list[str]:
    """Every definition: the taxonomy, the policy, the healthy and the poison sagas."""
    return [TAXONOMY, POLICY, STEADY, *SAGAS.values()]


class Meltdown(BaseException):
    """Not an Exception: what a careless handler (or library) may raise."""


class Enormous(Exception):
    """An exception carrying a whole payload in its message."""


class Unprintable(Exception):
    """An exception whose ``str()`` itself fails."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


HUGE_MESSAGE = 30 * 2**20  # characters


def build_registry(record: Record, pause: float = 0.02) -> Registry:
    """Handlers for every saga here; each call is recorded before it does anything.

    ``pause`` is how long a healthy call takes.
    """
    registry = Registry()

    def note(ctx: Any, phase: str) -> None:
        record({"run": ctx.run_id, "saga": ctx.saga, "step": ctx.step, "phase": phase,
                "attempt": ctx.attempt, "start": time.time()})

    def action(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if inspect.iscoroutinefunction(fn):
            async def called_async(ctx: Any) -> Any:
                note(ctx, "action")
                return await fn(ctx)
            return called_async

        def called(ctx: Any) -> Any:
            note(ctx, "action")
            return fn(ctx)
        return called

    def undo(ctx: Any) -> None:
        note(ctx, "compensation")

    def healthy(ctx: Any) -> dict[str, Any]:
        time.sleep(pause)
        return {"step": ctx.step, "run": ctx.run_id}

    async def healthy_async(ctx: Any) -> dict[str, Any]:
        await asyncio.sleep(pause)
        return {"step": ctx.step, "run": ctx.run_id}

    def load(ctx: Any) -> dict[str, Any]:
        return {"items": []}

    def prep(ctx: Any) -> dict[str, Any]:
        return {"items": []}

    def deep(ctx: Any) -> Any:
        value: Any = []
        for _ in range(DEEP):
            value = [value]
        return value

    def nan(ctx: Any) -> Any:
        return {"value": float("nan")}

    async def own_timeout(ctx: Any) -> Any:
        await asyncio.sleep(0)
        raise TimeoutError("upstream gave up")

    def melt_sync(ctx: Any) -> Any:
        raise Meltdown("core breach")

    async def melt_async(ctx: Any) -> Any:
        await asyncio.sleep(0)
        raise Meltdown("core breach (async)")

    def boom(ctx: Any) -> Any:
        raise Enormous("x" * HUGE_MESSAGE)

    def mute(ctx: Any) -> Any:
        raise Unprintable

    def quote(ctx: Any) -> Any:
        raise ValueError("cannot process a\x00b")

    def spill(ctx: Any) -> Any:
        return {"text": "a\x00b"}

    def ctrl_c(ctx: Any) -> Any:
        raise KeyboardInterrupt

    def exit_(ctx: Any) -> Any:
        raise SystemExit(3)

    async def block(ctx: Any) -> Any:
        time.sleep(ctx.input["seconds"])  # blocks the event loop: the fault under test
        return {"blocked": True}

    def hang(ctx: Any) -> Any:
        time.sleep(ctx.input["seconds"])
        # Noted when the call returns, long after its attempt was given up on.
        record({"run": ctx.run_id, "step": ctx.step, "phase": "returned",
                "attempt": ctx.attempt, "end": time.time(),
                "thread": threading.current_thread()})
        return {"hung": True}

    actions: dict[str, Callable[[Any], Any]] = {
        "steady.one": healthy, "steady.two": healthy_async, "poison.prep": prep,
        "poison.load": load, "poison.deep": deep, "poison.nan": nan,
        "poison.own_timeout": own_timeout, "poison.melt_sync": melt_sync,
        "poison.melt_async": melt_async, "poison.boom": boom, "poison.mute": mute,
        "poison.quote": quote, "poison.spill": spill,
        "poison.ctrl_c": ctrl_c, "poison.exit": exit_,
        "poison.block": block, "poison.hang": hang}
    for name, fn in actions.items():
        registry.add_action(name, action(fn))
    for name in ("steady.undo_one", "steady.undo_two", "poison.unprep", "poison.unload",
                 "poison.undo"):
        registry.add_compensation(name, undo)
    return registry


_side: SideLog | None = None


def _to_side_log(entry: dict[str, Any]) -> None:
    global _side
    if _side is None:
        _side = SideLog(os.environ["POISON_SIDE_LOG"])
    _side.write(pid=os.getpid(), **entry)


registry = build_registry(_to_side_log, pause=0.05)
