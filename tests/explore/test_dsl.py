"""What the language gained for the explorer: ``checkpoints: true`` on an action,
``timeout: none`` on a step that waits, ``max_duration`` on a saga — validated, modelled,
fingerprinted so that runs in flight keep going, and run by the engine."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from concordia.definitions.catalog import Catalog
from concordia.definitions.documents import parse_bytes
from concordia.definitions.identity import definition_document, fingerprint
from concordia.definitions.models import ActionStep, AwaitStep, SagaStep
from concordia.events.envelope import new_event
from concordia.testing import Harness
from tests.explore.conftest import plain_registry, tree

BASE = """\
name: s
version: 1
{extra}steps:
  - name: start
    action: x.start
    compensate: x.stop
{start}  - name: wait
    await: t.job.done
    timeout: {timeout}
"""


def parse(extra: str = "", start: str = "", timeout: str = "1h") -> object:
    text = BASE.format(extra=extra, start=start, timeout=timeout)
    parsed = parse_bytes(text.encode(), "s.yaml")
    return parsed


def test_the_new_keys_are_modelled() -> None:
    parsed = parse("max_duration: 2h\n", "    checkpoints: true\n", "none")
    assert parsed.problems == []  # type: ignore[attr-defined]
    [saga] = parsed.sagas  # type: ignore[attr-defined]
    start, wait = saga.steps
    assert isinstance(start, ActionStep)
    assert start.checkpoints is True
    assert isinstance(wait, AwaitStep)
    assert (wait.timeout, wait.timeout_none) == (None, True)
    assert saga.max_duration == 7200.0


@pytest.mark.parametrize(("text", "code"), [
    (BASE.format(extra="", start="    timeout: none\n", timeout="1h"),
     "timeout-none-not-for-step-kind"),
    (BASE.format(extra="", start="", timeout="none\n    on_timeout: start"),
     "on-timeout-without-timeout"),
    (BASE.format(extra="max_duration: soon\n", start="", timeout="1h"), "bad-duration"),
    (BASE.format(extra="", start="    checkpoints: yes please\n", timeout="1h"), "wrong-type"),
    # Silence is still an error: an await says its timeout, or that it has none.
    (BASE.replace("    timeout: {timeout}\n", "").format(extra="", start=""),
     "await-without-timeout"),
])
def test_what_the_new_keys_refuse(text: str, code: str) -> None:
    problems = parse_bytes(text.encode(), "s.yaml").problems
    assert code in {p.code for p in problems}, [p.format_text() for p in problems]


def test_tool_only_keys_leave_the_fingerprint_as_it_was() -> None:
    plain = parse().sagas[0]  # type: ignore[attr-defined]
    declared = parse("max_duration: 2h\n", "    checkpoints: true\n").sagas[0]  # type: ignore[attr-defined]
    assert fingerprint(plain) == fingerprint(declared)
    # ... while the stored document keeps what was declared.
    assert definition_document(declared)["max_duration"] == 7200.0
    assert "max_duration" not in definition_document(plain)
    assert "checkpoints" not in definition_document(plain)["steps"][0]


def test_timeout_none_is_part_of_the_fingerprint() -> None:
    # Waiting without end runs otherwise than waiting an hour.
    assert fingerprint(parse(timeout="none").sagas[0]) != fingerprint(  # type: ignore[attr-defined]
        parse().sagas[0])  # type: ignore[attr-defined]


def test_an_await_without_deadline_waits_with_no_timer(tmp_path: Path) -> None:
    catalog = tree(tmp_path, {"s": BASE.format(extra="", start="", timeout="none")})
    harness = Harness(catalog, plain_registry(catalog))
    view = harness.run("s", max_wait=86400 * 400)
    assert view.status == "suspended"
    assert harness.engine.store.next_wake_at() is None
    harness.engine.deliver(new_event("t.job.done", {"job_id": "j"}, source="urn:test"))
    harness.engine.run_until_idle()
    assert harness.engine.get_run(view.id).status == "completed"


def test_a_child_saga_step_may_say_it_has_no_deadline(tmp_path: Path) -> None:
    catalog = tree(tmp_path, {
        "kid": "name: kid\nversion: 1\nsteps:\n  - name: a\n    action: x.a\n"
               "    compensate: x.undo_a\n",
        "parent": textwrap.dedent("""\
            name: parent
            version: 1
            steps:
              - name: child
                saga: kid
                timeout: none
            """)})
    step = catalog.saga("parent").steps[0]
    assert isinstance(step, SagaStep)
    assert (step.timeout, step.timeout_none) == (None, True)
    view = Harness(catalog, plain_registry(catalog)).run("parent")
    assert view.status == "completed"


def test_the_shipped_sagas_declare_their_checkpointing_steps() -> None:
    from tests.conftest import DEFINITIONS, POLICIES

    catalog = Catalog.load_strict([DEFINITIONS, POLICIES])
    declared = {(s.name, step.name) for s in catalog.sagas.values() for step in s.steps
                if isinstance(step, ActionStep) and step.checkpoints}
    assert declared == {
        ("user_provisioning", "create_user"), ("user_provisioning", "generate_magic_link"),
        ("user_provisioning", "provision_vault"),
        ("user_provisioning", "create_default_community"),
        ("upm_activation", "mark_activating"), ("upm_activation", "sync_adapters"),
        ("upm_activation", "activate_snapshot"), ("cerebros_nas", "create_run"),
        ("cerebros_nas", "dispatch_training"), ("cerebros_nas", "persist_version")}
