"""A corpus of sagas with each kind of gap a definition can show (the seed's, and those
``catch``, ``if``, ``on_timeout`` and ``best_effort`` make possible): ``prove`` finds each,
at its step, with its counterexample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from concordia.definitions.catalog import Catalog
from concordia.explore import Bounds
from concordia.explore.prove import Proof, prove
from tests.explore.conftest import CORPUS, write_tree

# saga: (the property broken, the step it is reported at, the counterexample's words)
EXPECTED: dict[str, tuple[str, str | None, str]] = {
    # GAP-001: jobs dispatched, then a failure: nothing journaled them.
    "unrecorded_effect": ("no-silent-leftovers", "dispatch",
                          "dispatch#1: fails after its effect"),
    # GAP-002: adapters moved one by one, none checkpointed.
    "fan_out_unrecorded": ("no-silent-leftovers", "sync", "sync[0]#1: fails after its effect"),
    "catch_after_effect": ("no-silent-leftovers", "charge", "charge#1: fails after its effect"),
    "best_effort_unrecorded": ("no-silent-leftovers", "invite",
                               "invite[0]#1: fails after its effect"),
    "timeout_abandons_retry": ("no-silent-leftovers", "push", "push#1: fails after its effect"),
    "skipped_result_read": ("events-and-reads", "send", "if quote: false"),
    "timeout_skip_read": ("events-and-reads", "report",
                          "await wait_job: no corpus.job.done event within its timeout"),
    "caught_field_read": ("events-and-reads", "send",
                          "quote#1: fails before its effect (QuoteUnavailable)"),
    "goto_skip_read": ("events-and-reads", "notify",
                       "reserve#1: fails before its effect (SoldOut)"),
    "over_max_duration": ("termination", None, "book#1: fails"),
    "wait_forever_bounded": ("termination", "wait_job", "no fault"),
}


@pytest.fixture(scope="module")
def proof() -> Proof:
    catalog = Catalog.load_strict([str(CORPUS / "definitions"), str(CORPUS / "policies")])
    return prove(catalog, Bounds())


def test_the_corpus_holds_exactly_the_expected_gaps() -> None:
    files = {f.removesuffix(".yaml") for f in os.listdir(CORPUS / "definitions" / "sagas")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("saga", sorted(EXPECTED))
def test_prove_finds_each_gap_with_its_counterexample(proof: Proof, saga: str) -> None:
    code, step, words = EXPECTED[saga]
    found = [p for p in proof.problems
             if p.severity == "error" and p.file.endswith(f"/{saga}.yaml")]
    assert [p.code for p in found] == [f"prove-{code}"], [p.format_text() for p in found]
    [problem] = found
    assert words in problem.extra["faults"]
    assert problem.extra["calls"]
    assert problem.line > 0
    if step is not None:
        saga_def = next(s for s in proof.explorations if s.saga == saga)
        assert saga_def is not None
        assert problem.pointer.startswith("/steps/")
        index = int(problem.pointer.split("/")[2])
        names = [s.name for s in Catalog.load_strict(
            [str(CORPUS / "definitions"), str(CORPUS / "policies")]).saga(saga).steps]
        assert names[index] == step


def test_an_event_missing_from_the_taxonomy_gives_validates_error(tmp_path: Path) -> None:
    # DRIFT-001's kind: validate finds it statically, and prove reports it as validate.
    paths = write_tree(tmp_path, {"drift": """\
        name: drift
        version: 1
        steps:
          - name: finish
            action: x.finish
            compensate: none
            reason: the last step
            emit:
              - event: user.onboarding.complete
        """})
    proof = prove(Catalog.load(paths), Bounds())
    assert [p.code for p in proof.problems if p.severity == "error"] == ["unknown-event"]
    assert proof.explorations == []
