"""A worker process for the crash tests: ``python -m tests.events_runtime.child MODE ...``.

``suspend DB DEFS EFFECTS EVENT``: deliver the trigger EVENT (a JSON file), drive the run to
its await, print the run id and wait to be killed.
``crash DB DEFS EFFECTS EVENT K``: deliver EVENT and drive runs, SIGKILLing this process at
the K-th store write (before it when K is odd, after it when even); print ``survived`` if
there were fewer writes than that.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from concordia import Catalog, Engine
from tests.events_runtime import domain

WRITES = frozenset({"create", "commit", "patch", "leases", "deliver", "mark_published"})


class KillingStore:
    """Delegates to a store; kills the process around its K-th write."""

    def __init__(self, store: Any, k: int) -> None:
        self._store = store
        self._k = k
        self._writes = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            self._writes += 1
            target = (self._k + 1) // 2
            if self._writes == target and self._k % 2 == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            result = attr(*args, **kwargs)
            if self._writes == target and self._k % 2 == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        return write


def main(argv: list[str]) -> None:
    mode, db, defs, effects, event_file = argv[:5]
    # A short lease: the run of a killed child is carried on by its successor within 0.5 s.
    engine = Engine(Catalog.load_strict([defs]), domain.registry(effects=Path(effects)),
                    f"sqlite:///{db}", lease_ttl=0.5)
    event = json.loads(Path(event_file).read_text(encoding="utf-8"))
    if mode == "suspend":
        run_id = engine.deliver(event).started[0]
        engine.run_until_idle()
        print(run_id, engine.get_run(run_id).status, flush=True)
        while True:
            time.sleep(60)
    engine.store = KillingStore(engine.store, int(argv[5]))  # type: ignore[assignment]
    engine.deliver(event)
    engine.run_until_idle()
    print("survived", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
