"""Saga diagrams for the API and the page: the author-level graph ``concordia graph``
draws (:mod:`concordia.machine.run_diagram`), as an HTTP answer."""

from __future__ import annotations

from typing import Any, Literal

from starlette.responses import Response

from concordia.definitions.models import Saga
from concordia.machine.run_diagram import draw as draw_diagram
from concordia.runtime.views import RunView

Format = Literal["svg", "mermaid"]
# A diagram route's 200 in the OpenAPI document (its only answers that are not problems).
DIAGRAM_RESPONSE: dict[str, Any] = {
    "description": "The diagram: SVG, or Mermaid as text",
    "content": {"image/svg+xml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}}}}


def draw(saga: Saga, fmt: Format, view: RunView | None = None) -> str:
    """``saga`` as SVG or Mermaid; with ``view``, coloured by what that run did."""
    run = (view.visits(), view.status, view.timed_out()) if view is not None else None
    return draw_diagram(saga, fmt, run)


def diagram_response(text: str, fmt: Format) -> Response:
    """A drawn diagram as an HTTP answer: SVG as an image, Mermaid as text."""
    media = "image/svg+xml" if fmt == "svg" else "text/plain; charset=utf-8"
    return Response(text, media_type=media)
