"""Two sample flows of the Serverless Workflow specification, ported to Concordia's DSL
(``serverless_workflow/``), run on every engine and store with their expected outcomes.

- "provision-orders" (switch-like routing of errors, sub-flows): a provisioned order is
  applied by its sub-flow; each known error routes to the sub-flow that handles it and
  only that one runs; an unknown error fails the flow.
- "process-transactions" (a ``foreach`` whose actions each hold under a condition): each
  transaction goes to the banking service for its size, in order; when the bank refuses
  one, the transactions already processed are reversed, last first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from concordia.definitions.catalog import Catalog
from concordia.errors import PermanentError
from concordia.registry import Registry
from concordia.runtime.engine import Engine
from concordia.runtime.kinds.children import child_run_id

EngineFor = Callable[..., Engine]
EXAMPLES = Path(__file__).parent / "serverless_workflow"
ORDERS = Catalog.load_strict([str(p) for p in sorted(EXAMPLES.glob("*.yaml"))
                              if "banking" not in p.name])
BANKING = Catalog.load_strict([str(EXAMPLES / "customer_banking_transactions.yaml")])


def test_the_ported_examples_validate_without_a_single_problem() -> None:
    assert Catalog.load([str(EXAMPLES)]).problems == []
    assert sorted(name for name, _ in ORDERS.sagas) == [
        "apply_order", "handle_missing_id", "handle_missing_item", "handle_missing_quantity",
        "provision_orders"]


# -- provision-orders ------------------------------------------------------------------------


class Orders:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.registry = Registry()
        self.registry.add_action("orders.provision", self.provision)
        self.registry.add_compensation("orders.unprovision", self.unprovision)
        self.registry.add_action("orders.apply", self.apply)
        self.registry.add_compensation("orders.unapply", lambda ctx: None)
        self.registry.add_action("orders.record_missing", self.record_missing)

    def provision(self, ctx: Any) -> Any:
        order = ctx.input["order"]
        self.calls.append(("provision", order.get("id")))
        for field in ("id", "item", "quantity"):
            if field not in order:
                raise PermanentError(f"order has no {field}",
                                     type=f"/samples/errors/missing-order-{field}",
                                     details={"order": order})
        if order["item"] == "unicorn":
            raise PermanentError("out of stock", type="/samples/errors/out-of-stock")
        return {"provisioned": order["id"]}

    def unprovision(self, ctx: Any) -> None:
        self.calls.append(("unprovision", ctx.result))

    def apply(self, ctx: Any) -> Any:
        self.calls.append(("apply", ctx.input["order"]["id"]))
        return {"applied": ctx.input["order"]["id"]}

    def record_missing(self, ctx: Any) -> Any:
        self.calls.append(("record", ctx.saga))
        return {"recorded": ctx.saga}


BRANCHES = ["apply_order", "missing_id", "missing_item", "missing_quantity"]


@pytest.mark.parametrize(("order", "branch", "sub_flow"), [
    ({"id": "o-1", "item": "laptop", "quantity": 1}, "apply_order", "apply_order"),
    ({"item": "laptop", "quantity": 1}, "missing_id", "handle_missing_id"),
    ({"id": "o-3", "quantity": 1}, "missing_item", "handle_missing_item"),
    ({"id": "o-4", "item": "laptop"}, "missing_quantity", "handle_missing_quantity"),
])
def test_provision_orders_takes_exactly_one_branch(
        order: dict[str, Any], branch: str, sub_flow: str, engine_for: EngineFor) -> None:
    orders = Orders()
    engine = engine_for(ORDERS, orders.registry)
    run = engine.start("provision_orders", {"order": order})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    ran = [name for name in BRANCHES if view.step(name).status == "succeeded"]
    assert ran == [branch]
    child = engine.get_run(child_run_id(run.id, branch))
    assert (child.saga, child.status) == (sub_flow, "completed")
    provision = view.step("provision_order")
    if branch == "apply_order":
        assert provision.status == "succeeded"
        assert orders.calls == [("provision", "o-1"), ("apply", "o-1")]
    else:
        assert provision.status == "caught"
        assert view.results["provision_order"]["error"]["type"] == (
            f"/samples/errors/missing-order-{branch.removeprefix('missing_')}")
        assert orders.calls[-1] == ("record", sub_flow)
    assert orders.calls.count(("apply", order.get("id"))) == (branch == "apply_order")


def test_provision_orders_fails_on_an_error_it_does_not_know(engine_for: EngineFor) -> None:
    orders = Orders()
    engine = engine_for(ORDERS, orders.registry)
    run = engine.start("provision_orders",
                       {"order": {"id": "o-9", "item": "unicorn", "quantity": 1}})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "failed"  # nothing was done that needs undoing
    assert view.error == "step provision_order: PermanentError: out of stock"
    assert all(view.step(name).status == "pending" for name in BRANCHES)


# -- process-transactions ------------------------------------------------------------------


class Bank:
    def __init__(self, refuse: int | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, int]] = []
        self.registry = Registry()
        self.registry.add_action("banking.larger_tx", self.service("larger"))
        self.registry.add_action("banking.smaller_tx", self.service("smaller"))
        self.registry.add_compensation("banking.reverse_tx", self.reverse)

    def service(self, size: str) -> Callable[[Any], Any]:
        def process(ctx: Any) -> Any:
            tx = ctx.vars["tx"]
            self.calls.append((size, tx))
            if tx == self.refuse:
                raise PermanentError(f"transaction {tx} refused", status=402)
            return {"service": size, "tx": tx, "ref": ctx.idempotency_key}
        return process

    def reverse(self, ctx: Any) -> None:
        self.calls.append(("reverse", ctx.result["tx"]))


TRANSACTIONS = [100, 7000, 4999, 5000, 25]


def test_each_transaction_goes_to_the_service_for_its_size(engine_for: EngineFor) -> None:
    bank = Bank()
    engine = engine_for(BANKING, bank.registry)
    run = engine.start("customer_banking_transactions",
                       {"customer": {"transactions": TRANSACTIONS}})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "completed"
    assert [tx for size, tx in bank.calls if size == "larger"] == [7000, 5000]
    assert [tx for size, tx in bank.calls if size == "smaller"] == [100, 4999, 25]
    larger = view.results["process_larger_transactions"]
    assert [(r["tx"], r["ref"]) for r in larger] == [
        (7000, f"{run.id}:process_larger_transactions:0"),
        (5000, f"{run.id}:process_larger_transactions:1")]


def test_a_refused_transaction_reverses_the_processed_ones_last_first(
        engine_for: EngineFor) -> None:
    bank = Bank(refuse=4999)
    engine = engine_for(BANKING, bank.registry)
    run = engine.start("customer_banking_transactions",
                       {"customer": {"transactions": TRANSACTIONS}})
    engine.run_until_idle()
    view = engine.get_run(run.id)
    assert view.status == "compensated"
    assert [tx for size, tx in bank.calls if size == "smaller"] == [100, 4999]
    # The stage's steps are undone in reverse, each fan-out's items last first.
    assert [tx for size, tx in bank.calls if size == "reverse"] == [100, 5000, 7000]
    failed = view.step("process_smaller_transactions")
    assert failed.error_detail is not None
    assert failed.error_detail["status"] == 402
