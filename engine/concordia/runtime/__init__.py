"""The interpreter: drives runs, retries, timers, compensation and await resumption."""

from concordia.runtime.context import CompensationContext, StepContext
from concordia.runtime.engine import Delivery, Engine, InputError
from concordia.runtime.views import RunView

__all__ = ["CompensationContext", "Delivery", "Engine", "InputError", "RunView", "StepContext"]
