"""The interpreter: drives runs, retries, timers, compensation and await resumption."""

from concordia.errors import InputError
from concordia.runtime.aengine import AsyncEngine
from concordia.runtime.context import (
    CompensationContext,
    ItemCompensationContext,
    ItemContext,
    StepContext,
)
from concordia.runtime.delivery import Delivery
from concordia.runtime.engine import Engine
from concordia.runtime.views import RunView

__all__ = ["AsyncEngine", "CompensationContext", "Delivery", "Engine", "InputError",
           "ItemCompensationContext", "ItemContext", "RunView", "StepContext"]
