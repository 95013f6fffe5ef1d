"""The fleet's domain: an order saga whose payment arrives over NATS, and handlers that
record their effects in a table of their own, keyed by idempotency key.

Workers load this module with ``--handlers tests.scale.shop``; ``$SCALE_EFFECTS`` names
where the effects go (a PostgreSQL URL with ``schema=``, or a SQLite file). Every call is
also counted in ``calls`` (one row per call), so a test sees at-least-once calls beside
exactly-once effects. Plans (by order number): success, a failure for good before the
payment, one after it (compensating the charge and the reservation), a transient
failure a retry absorbs.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from typing import Any

from concordia.errors import PermanentError
from concordia.registry import Registry

STEPS = ("reserve", "charge", "wait_payment", "pack", "ship")
ACTIONS = ("reserve", "charge", "pack", "ship")
PLANS = ("ok", "fail:charge", "fail:pack", "flaky:pack", "ok")

TAXONOMY = """
events:
  - name: shop.order.placed
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      plan: {type: string, required: true}
  - name: shop.payment.requested
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      amount: {type: number, required: true}
  - name: shop.payment.settled
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
      amount: {type: number, required: true}
  - name: shop.order.shipped
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
  - name: shop.order.cancelled
    version: 1
    reliability: persistent
    payload_schema:
      order_id: {type: string, required: true}
"""

SAGA = """
name: order
version: 1
trigger:
  event: shop.order.placed
  input:
    order_id: event.data.order_id
    plan: event.data.plan
input_schema:
  order_id: {type: string, required: true}
  plan: {type: string, required: true}
steps:
  - name: reserve
    action: shop.reserve
    compensate: shop.release
  - name: charge
    action: shop.charge
    compensate: shop.refund
    emit:
      - event: shop.payment.requested
        payload: {order_id: input.order_id, amount: results.charge.amount}
  - name: wait_payment
    await: shop.payment.settled
    match: event.data.order_id == input.order_id
    timeout: 5m
  - name: pack
    action: shop.pack
    compensate: shop.unpack
    retry:
      attempts: 3
      retryable: [ConnectionError]
      backoff: {initial: 50ms, factor: 1, jitter: 0}
  - name: ship
    action: shop.ship
    compensate: none
    reason: the last step; nothing after it can fail
    emit:
      - event: shop.order.shipped
        payload: {order_id: input.order_id}
on_failure:
  - event: shop.order.cancelled
    payload: {order_id: input.order_id}
"""


def plan_for(i: int) -> str:
    return PLANS[i % len(PLANS)]


def order_id(i: int) -> str:
    return f"o-{i:05d}"


def expected_status(plan: str) -> str:
    return "compensated" if plan.startswith("fail:") else "completed"


def expected_undone(plan: str) -> list[str]:
    """The actions compensated, for a run of ``plan``."""
    if plan == "fail:charge":
        return ["reserve"]
    if plan == "fail:pack":
        return ["charge", "reserve"]
    return []


def result_of(order: str, step: str) -> dict[str, Any]:
    return {"step": step, "order": order, **({"amount": 10.0} if step == "charge" else {})}


# -- the effects table -------------------------------------------------------------------------

EFFECTS_DDL = [
    "CREATE TABLE IF NOT EXISTS effects (key TEXT NOT NULL, phase TEXT NOT NULL, "
    "run_id TEXT NOT NULL, step TEXT NOT NULL, PRIMARY KEY (key, phase))",
    "CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, phase TEXT NOT NULL, "
    "pid INTEGER NOT NULL)",
]


class Effects:
    """Where a process's handlers record what they did (one connection per thread)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()

    def _conn(self) -> Any:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.url.startswith("postgresql"):
                import psycopg

                from concordia.store.postgres import split_url

                conninfo, schema = split_url(self.url)
                conn = psycopg.connect(conninfo, autocommit=True,
                                       options=f"-csearch_path={schema}")
            else:
                conn = sqlite3.connect(self.url, isolation_level=None, timeout=30)
            self.local.conn = conn
        return conn

    def _sql(self, text: str) -> str:
        return text if self.url.startswith("postgresql") else text.replace("%s", "?")

    def create(self) -> None:
        for ddl in EFFECTS_DDL:
            self._conn().execute(ddl)

    def record(self, ctx: Any, phase: str) -> None:
        """Record a call and its effect; a lost connection (the database restarting) is
        made again, for up to a minute, as a handler of a real service would."""
        for _ in range(120):
            try:
                self._record(ctx, phase)
                return
            except Exception as exc:
                if "Operational" not in type(exc).__name__ and "Shutdown" not in type(
                        exc).__name__:
                    raise
                self.close()
                time.sleep(0.5)
        raise ConnectionError("the effects database stayed unreachable")

    def _record(self, ctx: Any, phase: str) -> None:
        conn = self._conn()
        conn.execute(self._sql("INSERT INTO calls (key, phase, pid) VALUES (%s, %s, %s)"),
                     (ctx.idempotency_key, phase, os.getpid()))
        # The effect itself is idempotent by key: a call that re-runs changes nothing.
        conn.execute(self._sql("INSERT INTO effects (key, phase, run_id, step) VALUES "
                               "(%s, %s, %s, %s) ON CONFLICT DO NOTHING"),
                     (ctx.idempotency_key, phase, ctx.run_id, ctx.step))

    def rows(self, query: str) -> list[Any]:
        return list(self._conn().execute(query).fetchall())

    def close(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            self.local.conn = None
            with contextlib.suppress(Exception):  # already broken
                conn.close()


_effects: Effects | None = None


def effects() -> Effects:
    global _effects
    if _effects is None:
        _effects = Effects(os.environ["SCALE_EFFECTS"])
    return _effects


def _work() -> None:
    time.sleep(random.uniform(0.002, 0.015))


def _action(step: str) -> Any:
    def act(ctx: Any) -> dict[str, Any]:
        _work()
        plan = ctx.input["plan"]
        if plan == f"fail:{step}":
            raise PermanentError(f"{step} refused")
        if plan == f"flaky:{step}" and ctx.attempt == 1:
            raise ConnectionError(f"{step} flaked")
        effects().record(ctx, "do")
        return result_of(ctx.input["order_id"], step)

    return act


def _undo(ctx: Any) -> None:
    _work()
    effects().record(ctx, "undo")


registry = Registry()
for _step in ACTIONS:
    registry.add_action(f"shop.{_step}", _action(_step))
for _undo_name in ("shop.release", "shop.refund", "shop.unpack"):
    registry.add_compensation(_undo_name, _undo)
