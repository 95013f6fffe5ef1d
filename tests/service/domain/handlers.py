"""The shop's handlers: each decides from the run's input whether it fails.

``fail_at: <step>`` fails that step for good; ``refund_blocked_by: <path>`` makes the
refund fail while that file exists (so a test can fix it, then retry the run).
"""

from __future__ import annotations

import os
from typing import Any

from concordia import PermanentError, Registry

registry = Registry()


def _fails(ctx: Any, step: str) -> None:
    if ctx.input.get("fail_at") == step:
        raise PermanentError(f"{step} refused for order {ctx.input['order_id']}")


@registry.action("shop.reserve")
def reserve(ctx: Any) -> dict[str, Any]:
    _fails(ctx, "reserve")
    return {"hold": f"h-{ctx.input['order_id']}"}


@registry.compensation("shop.release")
def release(ctx: Any) -> None:
    return None


@registry.action("shop.charge")
async def charge(ctx: Any) -> dict[str, Any]:
    _fails(ctx, "charge")
    return {"charge_id": f"ch-{ctx.input['order_id']}"}


@registry.compensation("shop.refund")
async def refund(ctx: Any) -> dict[str, Any]:
    blocker = ctx.input.get("refund_blocked_by")
    if blocker and os.path.exists(blocker):
        raise RuntimeError("the payment provider refuses refunds right now")
    return {"refunded": ctx.result["charge_id"]}


@registry.action("shop.ship")
def ship(ctx: Any) -> dict[str, Any]:
    _fails(ctx, "ship")
    return {"parcel": f"p-{ctx.input['order_id']}"}


@registry.action("shop.hold")
def hold(ctx: Any) -> dict[str, Any]:
    return {"held": ctx.input["order_id"]}


@registry.compensation("shop.unhold")
def unhold(ctx: Any) -> None:
    return None


@registry.action("shop.confirm")
def confirm(ctx: Any) -> dict[str, Any]:
    return {"confirmed": ctx.input["order_id"]}


@registry.action("shop.pack")
def pack(ctx: Any) -> dict[str, Any]:
    return {"packed": ctx.item}


@registry.compensation("shop.unpack")
def unpack(ctx: Any) -> None:
    return None


@registry.action("shop.dispatch")
def dispatch(ctx: Any) -> dict[str, Any]:
    _fails(ctx, "dispatch")
    return {"dispatched": ctx.input["order_id"]}
