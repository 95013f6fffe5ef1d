"""Sagas compiled into python-statemachine classes, and their diagrams."""

from concordia.machine.compile import CompiledSaga, compile_saga
from concordia.machine.graph import to_dot, to_mermaid, to_svg

__all__ = ["CompiledSaga", "compile_saga", "to_dot", "to_mermaid", "to_svg"]
