"""Located findings: what is wrong, where (file, line, column, JSON pointer), and how bad."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a definition file.

    ``line`` and ``column`` are 1-based; 0 means "the whole file". ``pointer`` is the
    RFC 6901 JSON pointer of the offending value inside the document.
    """

    code: str
    message: str
    file: str
    line: int = 0
    column: int = 0
    pointer: str = ""
    severity: Severity = "error"
    hint: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    def format_text(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        text = f"{where}: {self.severity} {self.code} {self.message}"
        if self.pointer:
            # A pointer holds keys as written; a huge key must not make a huge line.
            shown = self.pointer if len(self.pointer) <= 120 else self.pointer[:120] + "…"
            text += f" [at {shown}]"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.line, self.column, self.code)


def pointer_join(base: str, *parts: str | int) -> str:
    """Extend a JSON pointer, escaping ``~`` and ``/`` as RFC 6901 requires."""
    out = base
    for part in parts:
        out += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return out
