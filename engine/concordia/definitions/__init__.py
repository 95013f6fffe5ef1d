"""The definition language: models, safe YAML loading, JSON Schemas and the catalog."""

from concordia.definitions.catalog import Catalog
from concordia.definitions.checks import HandlerNames
from concordia.definitions.models import (
    ActionStep,
    AwaitStep,
    Emit,
    EventDef,
    Policy,
    PolicyStep,
    RetryPolicy,
    Saga,
    Step,
)
from concordia.definitions.problems import Problem

__all__ = [
    "ActionStep",
    "AwaitStep",
    "Catalog",
    "Emit",
    "EventDef",
    "HandlerNames",
    "Policy",
    "PolicyStep",
    "Problem",
    "RetryPolicy",
    "Saga",
    "Step",
]
