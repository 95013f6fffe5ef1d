"""Policy steps: evaluate a policy over inputs mapped from the run, record the decision.

The decision is recorded (in the run's decisions and its history) whatever it is; an
approval succeeds the step with the decision record as its result, a rejection fails it
for good with the policy's reason, and a policy that cannot be evaluated fails it too
(never an approval).
"""

from __future__ import annotations

from collections.abc import Sequence

from concordia.definitions.models import PolicyStep
from concordia.errors import ExpressionError, PolicyError
from concordia.runtime.effects import Flow
from concordia.runtime.kinds.base import OnJournal, Stop, steps_of
from concordia.runtime.pending import utc
from concordia.runtime.run_pass import RunPass
from concordia.status import Kind
from concordia.store.records import StepRecord


class Policies(OnJournal):
    """Policy steps (see the module docstring)."""

    batched = False

    def start(self, p: RunPass, names: Sequence[str], now: float) -> Flow[Stop]:
        for step, rec in steps_of(p, names, PolicyStep):
            self._check(p, step, rec, now)
        return None
        yield  # a flow, though it asks for nothing

    def _check(self, p: RunPass, step: PolicyStep, rec: StepRecord, now: float) -> None:
        j = self.j
        rec.attempt += 1
        rec.started_at = now
        try:
            inputs = {k: j.judge.value(step.name, v, p.run, p.results)
                      for k, v in step.input.items()}
            policy = j.catalog.policy(step.policy, step.version)
            record = j.judge.policy(step.name, policy, inputs, utc(now))
        except (PolicyError, ExpressionError, KeyError) as exc:
            j.fail(p, step, rec, exc, now, retry=False)
            return
        decision = {**record.to_dict(), "run_id": p.run.id, "step": step.name}
        p.pending.decisions.append(decision)
        p.pending.note(now, Kind.POLICY_DECIDED, step.name, rec.attempt,
                       decision=record.decision, reason=record.reason, rule=record.rule,
                       decision_id=record.decision_id)
        rec.result = record.to_dict()
        if record.decision == "approve":
            j.succeed_or_fail(p, step, rec, now)
            return
        j.fail(p, step, rec, PolicyError(policy.name, f"rejected: {record.reason}"), now,
               retry=False)
