"""Problem reports in the formats CI systems read: text, json, sarif (2.1.0), github."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from concordia.definitions.problems import Problem

FORMATS = ("text", "json", "sarif", "github")
_SARIF_LEVEL = {"error": "error", "warning": "warning", "note": "note"}


def render(problems: Sequence[Problem], fmt: str, *, tool: str = "concordia",
           version: str = "0", colour: bool = False) -> str:
    if fmt == "text":
        return render_text(problems, colour=colour)
    if fmt == "json":
        return json.dumps({"problems": [problem_dict(p) for p in problems],
                           "count": len(problems)}, indent=2)
    if fmt == "sarif":
        return json.dumps(_sarif(problems, tool, version), indent=2)
    if fmt == "github":
        return "\n".join(_github(p) for p in problems)
    raise ValueError(f"unknown format {fmt!r}")


_COLOURS = {"error": "\x1b[31m", "warning": "\x1b[33m", "note": "\x1b[36m"}


def render_text(problems: Sequence[Problem], *, colour: bool = False) -> str:
    """One line a problem and a count; ``colour``: severities in colour (for a terminal)."""
    lines = [_coloured(p) if colour else p.format_text() for p in problems]
    count = {severity: sum(1 for p in problems if p.severity == severity)
             for severity in ("error", "warning", "note")}
    summary = f"{count['error']} error(s), {count['warning']} warning(s)"
    if count["note"]:
        summary += f", {count['note']} note(s)"
    lines.append(summary if problems else "no problems")
    return "\n".join(lines)


def _coloured(p: Problem) -> str:
    text = p.format_text()
    word = f" {p.severity} {p.code} "
    return text.replace(word, f" {_COLOURS[p.severity]}{p.severity}\x1b[0m {p.code} ", 1)


def problem_dict(p: Problem) -> dict[str, object]:
    """A problem as the JSON outputs show it."""
    return {"file": p.file, "line": p.line, "column": p.column, "pointer": p.pointer,
            "severity": p.severity, "code": p.code, "message": p.message, "hint": p.hint}


def _github(p: Problem) -> str:
    level = {"error": "error", "warning": "warning"}.get(p.severity, "notice")
    msg = _github_escape(p.message + (f" ({p.hint})" if p.hint else ""))
    # Property values end at `,` and the message starts at `::`, so a file name holding
    # either needs them escaped as well (as @actions/core's escapeProperty does).
    loc = "file=" + _github_escape(p.file).replace(":", "%3A").replace(",", "%2C")
    if p.line:
        loc += f",line={p.line},col={p.column}"
    return f"::{level} {loc},title={p.code}::{msg}"


def _github_escape(text: str) -> str:
    # GitHub workflow commands need %, CR and LF escaped everywhere.
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _sarif_uri(path: str) -> str:
    """A URI reference for SARIF: ``file://`` for absolute paths, else percent-encoded."""
    if os.path.isabs(path):
        return Path(path).as_uri()
    return quote(path.replace(os.sep, "/"))


def _sarif(problems: Sequence[Problem], tool: str, version: str) -> dict[str, object]:
    rules = sorted({p.code for p in problems})
    results = []
    for p in problems:
        region = {"startLine": max(p.line, 1), "startColumn": max(p.column, 1)}
        result: dict[str, object] = {
            "ruleId": p.code,
            "level": _SARIF_LEVEL[p.severity],
            "message": {"text": p.message + (f" ({p.hint})" if p.hint else "")},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": _sarif_uri(p.file)},
                                                "region": region}}],
        }
        if p.pointer:
            result["properties"] = {"pointer": p.pointer}
        results.append(result)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": tool, "version": version,
                                      "rules": [{"id": r} for r in rules]}},
                  "results": results}],
    }
