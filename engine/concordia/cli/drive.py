"""Driving one run from the command line, with progress on standard error.

``run``, ``cancel``, ``retry`` and ``events send --handlers`` drive only the runs they
touched, never the rest of the store: other runs belong to workers. The child runs a run
waits for (child sagas) are the run's own work: they are driven too, in turn. Progress shows the
step in hand; on a terminal it is one line redrawn in place, when piped one line per
change. The run is left (and the command returns) when it ends, when it suspends on an
await (the event and its deadline are shown), or when its next timer is further away
than ``max_wait`` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from concordia.cli.common import colour_enabled
from concordia.cli.render import Times, child_run_id, saga_step, step_in_hand, waiting_on
from concordia.status import ACTIVE, ENDED, CompStatus, RunStatus, StepStatus

if TYPE_CHECKING:
    from concordia.definitions.models import Saga
    from concordia.runtime.engine import Engine
    from concordia.runtime.views import RunView

# Statuses in which a run is not moving by itself and not waiting on a timer.
SETTLED = ENDED | {RunStatus.SUSPENDED}
# Sleep in slices, so Ctrl-C is prompt and a run moved by someone else is seen.
_SLICE = 0.5
_IDLE = 0.05


class Progress:
    """One status line: redrawn in place on a terminal, printed per change otherwise."""

    def __init__(self, stream: Any = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = colour_enabled(self.stream)
        self._last = ""

    def show(self, text: str, key: str | None = None) -> None:
        """Show ``text``; when piped, only if ``key`` (default: the text) changed, so that
        a countdown redrawn on a terminal is one line in a log."""
        key = text if key is None else key
        if self.quiet or (key == self._last and not self.live):
            return
        self._last = key
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.live and self._last and not self.quiet:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
        self._last = ""


def drive(engine: Engine, run_id: str, saga: Saga | None, *, max_wait: float,
          progress: Progress, times: Times) -> RunView:
    """Advance ``run_id`` (and only it) until it settles or waits longer than ``max_wait``."""
    view: RunView | None = None  # the run as last read, while it is still current
    try:
        while True:
            if view is None:
                view = engine.get_run(run_id)
            now = engine.clock.now()
            if view.status in SETTLED:
                if view.status == RunStatus.SUSPENDED:
                    if _drive_children(engine, view, saga, max_wait, progress, times):
                        view = None
                        continue  # a child ended: its parent has work again
                    progress.show(f"run {run_id[:13]}: {waiting_on(view, saga, times, now)}",
                                  key="suspended")
                return view
            if view.status == RunStatus.WAITING and view.wake_at is not None and view.wake_at > now:
                if view.wake_at - now > max_wait:
                    return view
                progress.show(f"run {run_id[:13]}: {waiting_on(view, saga, times, now)}",
                              key=f"wait {view.wake_at}")
                _sleep_until(engine, view.wake_at)
                view = None
                continue
            progress.show(f"run {run_id[:13]}: {step_in_hand(view, saga)}")
            before = (view.updated_at, len(view.history))
            engine.advance(run_id)
            after = engine.get_run(run_id)
            if (after.updated_at, len(after.history)) == before and after.status == view.status:
                # Nothing moved (another process holds the run, or its timer is not yet
                # due): look again shortly rather than spin.
                time.sleep(_IDLE)
                view = None
            else:
                view = after
    finally:
        progress.done()


def _drive_children(engine: Engine, view: RunView, saga: Saga | None, max_wait: float,
                    progress: Progress, times: Times) -> bool:
    """Drive the child runs ``view`` waits for; whether the run has work again after."""
    from concordia.definitions.models import SagaStep

    if saga is None:
        return False
    for rec in view.steps:
        step = saga_step(saga, rec.name)
        child = child_run_id(rec)
        if not (isinstance(step, SagaStep) and isinstance(child, str) and (
                rec.status == StepStatus.AWAITING or rec.comp_status == CompStatus.AWAITING)):
            continue
        child_view = engine.get_run(child)
        if child_view.status in ACTIVE:
            child_saga = engine.core.book.of(child_view.saga, child_view.version).saga
            drive(engine, child, child_saga, max_wait=max_wait, progress=progress,
                  times=times)
    return engine.get_run(view.id).status not in SETTLED


def _sleep_until(engine: Engine, at: float) -> None:
    while (left := at - engine.clock.now()) > 0:
        time.sleep(min(left, _SLICE))
