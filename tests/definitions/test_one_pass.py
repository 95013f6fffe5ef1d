"""One pass reports every independent problem: a broken part hides nothing in the others.

A schema error spoils only its region (a step, a rule, one event of a domain file); the
rest of the definition is still checked for cross-references and CEL, and a reference to
the broken part is not reported a second time as unknown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from concordia.cli import main
from concordia.definitions import Catalog
from tests.conftest import DEFINITIONS

EVENTS = Path(DEFINITIONS, "events")

SAGA = """\
name: checkout
version: 1
steps:
  - name: reserve
    action: stock.reserve
    compensate: stock.release
    colour: blue
  - name: charge
    action: billing.charge
    compensate: billing.refund
    emit:
      - event: shop.order.charged
        payload:
          order: "system('ls')"
  - name: ship
    action: shipping.ship
    compensate: none
    reason: last step
    depends_on: [reserve, charge]
    emit:
      - event: user.account.created
        payload:
          user_id: results.reserve.id
          email: results.nope.email
"""


def _codes(catalog: Catalog) -> list[tuple[str, int, str]]:
    return [(p.code, p.line, p.pointer) for p in catalog.problems]


def test_a_broken_step_hides_nothing_in_the_others(tmp_path: Path) -> None:
    path = tmp_path / "checkout.yaml"
    path.write_text(SAGA)
    catalog = Catalog.load([str(path), str(EVENTS)])
    assert _codes(catalog) == [
        ("unknown-key", 7, "/steps/0/colour"),
        ("unknown-event", 12, "/steps/1/emit/0/event"),
        ("unknown-function", 14, "/steps/1/emit/0/payload/order"),
        ("unknown-step", 24, "/steps/2/emit/0/payload/email"),
    ]
    # Reading the broken step's result is fine: it is a step of this saga.
    assert not any("reserve" in p.message for p in catalog.problems[1:])
    # A saga with problems is checked but never offered to the engine.
    assert catalog.sagas == {}


def test_cli_reports_them_all_with_file_and_line(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "checkout.yaml"
    path.write_text(SAGA)
    assert main(["validate", str(path), str(EVENTS)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:14:11: error unknown-function expression calls 'system'" in out
    assert out.strip().endswith("4 error(s), 0 warning(s)")


def test_missing_name_still_checks_the_steps(tmp_path: Path) -> None:
    path = tmp_path / "nameless.yaml"
    path.write_text(SAGA.replace("name: checkout\n", "").replace("    colour: blue\n", ""))
    codes = [c for c, _, _ in _codes(Catalog.load([str(path), str(EVENTS)]))]
    assert codes == ["missing-key", "unknown-event", "unknown-function", "unknown-step"]


def test_a_broken_event_spoils_only_itself(tmp_path: Path) -> None:
    events = tmp_path / "shop.yaml"
    events.write_text("""\
kind: events
events:
  - name: shop.order.placed
    version: 1
    reliability: persistent
    payload_schema: {order_id: {type: string, required: true}}
  - name: shop.order.charged
    version: 1
    reliability: sometimes
    payload_schema: {order_id: {type: string, required: true}}
""")
    saga = tmp_path / "s.yaml"
    saga.write_text("""\
name: s
version: 1
steps:
  - name: a
    action: x.a
    compensate: none
    reason: nothing to undo
    emit:
      - {event: shop.order.placed, payload: {order_id: input.id}}
      - {event: shop.order.charged, payload: {order_id: input.id}}
""")
    catalog = Catalog.load([str(events), str(saga)])
    assert [(p.file, p.code) for p in catalog.problems] == [(str(events), "bad-value")]
    assert catalog.has_event("shop.order.placed")
    assert not catalog.has_event("shop.order.charged")
    assert ("s", 1) in catalog.sagas


def test_a_broken_rule_hides_nothing_in_the_other_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("""\
name: refunds
version: 1
rules:
  - name: too_big
    when: input.amount > 100
    decision: maybe
    reason: too big
  - name: odd
    when: exec('rm -rf /')
    decision: reject
    reason: "{{ nope }}"
default: {decision: approve, reason: fine}
""")
    saga = tmp_path / "s.yaml"
    saga.write_text("""\
name: s
version: 1
steps:
  - name: check
    policy: refunds
""")
    catalog = Catalog.load([str(path), str(saga)])
    assert [(p.file, p.code, p.line) for p in catalog.problems] == [
        (str(path), "bad-value", 6),
        (str(path), "unknown-function", 9),
        (str(path), "unknown-variable", 11),
    ]  # and the saga's reference to the broken policy is not "unknown policy"


def test_on_timeout_can_only_jump_forward(tmp_path: Path) -> None:
    saga = """\
name: s
version: 1
steps:
  - name: first
    action: x.a
    compensate: none
    reason: read-only
  - name: wait
    await: user.account.created
    timeout: 1h
    on_timeout: {target}
  - name: last
    action: x.b
    compensate: none
    reason: read-only
"""
    path = tmp_path / "s.yaml"
    path.write_text(saga.format(target="last"))
    assert Catalog.load([str(path), str(EVENTS)]).problems == []
    for target in ("first", "wait"):
        path.write_text(saga.format(target=target))
        [problem] = Catalog.load([str(path), str(EVENTS)]).problems
        assert (problem.code, problem.line) == ("on-timeout-not-forward", 11)
