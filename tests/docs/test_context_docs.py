"""The guide documents every attribute of a handler's context, and nothing it lacks."""

from __future__ import annotations

import re
from pathlib import Path

from concordia import CompensationContext, ItemCompensationContext, ItemContext, StepContext
from tests.conftest import ROOT

GUIDE = Path(ROOT, "docs", "guide.md")
# Which rows of the table apply to which context.
_KINDS = {StepContext: {"all", "actions"}, ItemContext: {"all", "actions", "fan-out items"},
          CompensationContext: {"all", "compensations"},
          ItemCompensationContext: {"all", "compensations", "fan-out items"}}


def _public(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        names |= {n for n in getattr(klass, "__slots__", ()) if not n.startswith("_")}
        names |= {n for n in vars(klass) if not n.startswith("_")}
    return names


def _documented() -> dict[str, str]:
    text = GUIDE.read_text("utf-8")
    section = text.split("\n## The handler's context\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)(?:\([^)]*\))?` \| ([\w -]+) \|", section, re.MULTILINE)
    return dict(rows)


def test_every_context_attribute_is_documented_where_it_exists() -> None:
    documented = _documented()
    for cls, kinds in _KINDS.items():
        expected = {name for name, where in documented.items() if where in kinds}
        assert _public(cls) == expected, cls.__name__
