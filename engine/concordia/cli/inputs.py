"""Reading the files a command is handed (an event, a run's input, a policy's inputs).

JSON or YAML, from a path or standard input (``-``), within the definitions' size limit
and with their safety rules: no duplicate keys, no tags, no NaN or infinity, no integer a
JSON consumer cannot read exactly.
"""

from __future__ import annotations

import sys
from typing import Any

from concordia.cli.common import EXIT_PROBLEM, EXIT_USAGE


class InputError(Exception):
    """A file could not be read or parsed; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        self.code = code
        super().__init__(message)


def display_name(path: str) -> str:
    return "<stdin>" if path == "-" else path


def load_data(path: str) -> Any:
    """Read JSON or YAML from ``path`` (``-``: stdin), safely and within size limits."""
    from concordia.definitions.yamlsafe import MAX_BYTES, YamlLoadError, load_yaml_bytes

    name = display_name(path)
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read: {exc.strerror or exc}", EXIT_USAGE) from None
    if len(raw) > MAX_BYTES:
        raise InputError(f"{name}: larger than the {MAX_BYTES:,}-byte limit", EXIT_PROBLEM)
    text_start = raw.lstrip()[:1]
    if path.endswith(".json") or text_start in (b"{", b"["):
        return _load_json(raw, name)
    try:
        return load_yaml_bytes(raw, name).data
    except YamlLoadError as exc:
        raise InputError(exc.problem.format_text(), EXIT_PROBLEM) from None


def _load_json(raw: bytes, name: str) -> Any:
    from concordia.definitions.jsonsafe import JsonLoadError, load_json

    try:
        return load_json(raw)
    except JsonLoadError as exc:
        where = f":{exc.line}:{exc.column}" if exc.line else ""
        raise InputError(f"{name}{where}: invalid JSON: {exc.reason}", EXIT_PROBLEM) from None
