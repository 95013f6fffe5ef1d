"""A small order domain for the event tests: a trigger, an await with an indexable match,
events before and after it, and the handlers (importable by child processes too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from concordia import Registry
from tests.events_runtime.conftest import Calls, write_tree

TAXONOMY = """
events:
  - name: shop.order.placed
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
  - name: shop.payment.requested
    version: 1
    reliability: transient
    payload_schema:
      order_id: {type: string, required: true}
      reservation: {type: string, required: true}
  - name: shop.payment.settled
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      amount: {type: number, required: true}
  - name: shop.order.confirmed
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      amount: {type: number, required: true}
  - name: shop.order.completed
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
  - name: shop.order.abandoned
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
"""

# Started by shop.order.placed; waits for the payment of its order (indexable match).
CHECKOUT = """
name: checkout
version: 1
trigger:
  event: shop.order.placed
  input:
    order_id: event.data.order_id
input_schema:
  order_id: {type: string, required: true}
steps:
  - name: reserve
    action: stock.reserve
    compensate: stock.release
    emit:
      - event: shop.payment.requested
        payload:
          order_id: input.order_id
          reservation: results.reserve.reservation
  - name: wait_payment
    await: shop.payment.settled
    match: event.data.order_id == input.order_id
    timeout: 1h
  - name: confirm
    action: order.confirm
    compensate: none
    reason: confirmation is a notice; the payment is refunded elsewhere
    emit:
      - event: shop.order.confirmed
        payload:
          order_id: input.order_id
          amount: results.wait_payment.amount
on_complete:
  - event: shop.order.completed
    payload: {order_id: input.order_id}
on_failure:
  - event: shop.order.abandoned
    payload: {order_id: input.order_id}
"""

# Started directly; waits for a payment in its own conversation: the index key is the
# correlation id, and the order id must match too.
CORRELATED = """
name: correlated
version: 1
input_schema:
  order_id: {type: string, required: true}
steps:
  - name: reserve
    action: stock.reserve
    compensate: stock.release
  - name: wait_payment
    await: shop.payment.settled
    match: event.correlationid == run.correlation_id && event.data.order_id == input.order_id
    timeout: 1h
  - name: confirm
    action: order.confirm
    compensate: none
    reason: confirmation is a notice
"""

# On timeout, skip confirmation and go on with the close-out step.
FALLBACK = """
name: fallback
version: 1
input_schema:
  order_id: {type: string, required: true}
steps:
  - name: reserve
    action: stock.reserve
    compensate: stock.release
  - name: wait_payment
    await: shop.payment.settled
    match: event.data.order_id == input.order_id
    timeout: 10m
    on_timeout: close_out
  - name: confirm
    action: order.confirm
    compensate: none
    reason: confirmation is a notice
  - name: close_out
    action: order.close_out
    compensate: none
    reason: bookkeeping only
"""

# The await is the last step: the delivery itself completes the run.
LAST_WAIT = """
name: last_wait
version: 1
input_schema:
  order_id: {type: string, required: true}
steps:
  - name: reserve
    action: stock.reserve
    compensate: stock.release
  - name: wait_payment
    await: shop.payment.settled
    match: event.data.order_id == input.order_id
    timeout: 1h
on_complete:
  - event: shop.order.completed
    payload: {order_id: input.order_id}
"""


def write_domain(root: Path) -> Path:
    return write_tree(root, {"events.yaml": TAXONOMY, "checkout.yaml": CHECKOUT,
                             "correlated.yaml": CORRELATED, "fallback.yaml": FALLBACK,
                             "last_wait.yaml": LAST_WAIT})


def registry(calls: Calls | None = None, effects: Path | None = None) -> Registry:
    """Handlers that record every call in ``calls`` and, when given, append each effect
    to the ``effects`` file (one JSON line), which survives the process."""
    reg = Registry()

    def note(name: str, ctx: Any, **extra: Any) -> None:
        if calls is not None:
            calls.add(name, ctx, **extra)
        if effects is not None:
            with effects.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"handler": name, "run_id": ctx.run_id,
                                     "key": ctx.idempotency_key}) + "\n")

    @reg.action("stock.reserve")
    def reserve(ctx: Any) -> dict[str, Any]:
        note("reserve", ctx)
        return {"reservation": f"res-{ctx.input['order_id']}"}

    @reg.compensation("stock.release")
    def release(ctx: Any) -> None:
        note("release", ctx)

    @reg.action("order.confirm")
    def confirm(ctx: Any) -> dict[str, Any]:
        note("confirm", ctx, results=ctx.results)
        return {"confirmation": f"conf-{ctx.input['order_id']}"}

    @reg.action("order.close_out")
    def close_out(ctx: Any) -> dict[str, Any]:
        note("close_out", ctx, results=ctx.results)
        return {}

    return reg


def effects_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
