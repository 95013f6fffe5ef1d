"""Small saga definitions for the runtime tests, written as YAML into temporary directories.

The sagas emit no events, so no event taxonomy is needed next to them.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from concordia.definitions.catalog import Catalog


def action(name: str, *, compensate: str | None = "auto", reason: str | None = None,
           **extra: Any) -> dict[str, Any]:
    """One action step: handler ``<name>.do``, compensation ``<name>.undo`` by default.

    ``compensate=None`` writes ``compensate: none`` with a reason.
    """
    step: dict[str, Any] = {"name": name, "action": f"{name}.do"}
    if compensate == "auto":
        step["compensate"] = f"{name}.undo"
    elif compensate is None:
        step["compensate"] = "none"
        step["reason"] = reason or f"{name} changes nothing that could be undone"
    else:
        step["compensate"] = compensate
    step.update(extra)
    return step


def saga(name: str, steps: Iterable[Mapping[str, Any]], *, version: int = 1,
         **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": version, "steps": [dict(s) for s in steps], **extra}


def write_definitions(directory: str | os.PathLike[str],
                      *docs: Mapping[str, Any] | str) -> list[str]:
    """Write each document (a dict or YAML text) to its own file under ``directory``."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, doc in enumerate(docs):
        text = doc if isinstance(doc, str) else yaml.safe_dump(dict(doc), sort_keys=False)
        path = os.path.join(directory, f"saga_{i:03d}.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
    return paths


def load_catalog(*docs: Mapping[str, Any] | str,
                 directory: str | os.PathLike[str] | None = None) -> Catalog:
    """A strict catalog of ``docs``, written to ``directory`` (a fresh temp dir if None)."""
    if directory is not None:
        write_definitions(directory, *docs)
        return Catalog.load_strict([os.fspath(directory)])
    with tempfile.TemporaryDirectory(prefix="concordia-sagas-") as tmp:
        write_definitions(tmp, *docs)
        return Catalog.load_strict([tmp])


class Recorder:
    """A registry for ``action(...)`` steps that records what each handler saw.

    Every action returns ``{"step": name, "run": run_id}`` unless ``behaviours`` names a
    callable for it; every compensation records its ``result`` and ``completed`` flag.
    """

    def __init__(self, names: Iterable[str],
                 behaviours: Mapping[str, Any] | None = None,
                 compensations: Mapping[str, Any] | None = None) -> None:
        from concordia.registry import Registry

        self.registry = Registry()
        self.calls: list[dict[str, Any]] = []
        self._behaviours = dict(behaviours or {})
        self._compensations = dict(compensations or {})
        for name in names:
            self.registry.add_action(f"{name}.do", self._action(name))
            self.registry.add_compensation(f"{name}.undo", self._compensation(name))

    def _action(self, name: str) -> Any:
        def handler(ctx: Any) -> Any:
            self.calls.append({"phase": "action", "step": name, "attempt": ctx.attempt,
                               "key": ctx.idempotency_key,
                               "results": copy.deepcopy(ctx.results),
                               "checkpoint": copy.deepcopy(ctx.checkpoint_data)})
            behaviour = self._behaviours.get(name)
            if behaviour is not None:
                return behaviour(ctx)
            return {"step": name, "run": ctx.run_id}
        return handler

    def _compensation(self, name: str) -> Any:
        def handler(ctx: Any) -> Any:
            self.calls.append({"phase": "compensation", "step": name, "attempt": ctx.attempt,
                               "key": ctx.idempotency_key,
                               "result": copy.deepcopy(ctx.result),
                               "completed": ctx.completed})
            behaviour = self._compensations.get(name)
            if behaviour is not None:
                return behaviour(ctx)
            return None
        return handler

    def actions(self) -> list[str]:
        return [c["step"] for c in self.calls if c["phase"] == "action"]

    def compensations(self) -> list[str]:
        return [c["step"] for c in self.calls if c["phase"] == "compensation"]

    def of(self, phase: str, step: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["phase"] == phase and c["step"] == step]
