"""The operations assets (ops/): the Grafana dashboard and the Prometheus alert rules use
only series, labels and statuses that ``/metrics`` exports, and the rules are valid
(``promtool check rules`` where Debian's prometheus package provides it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from concordia.status import RUN_STATUSES
from tests.conftest import ROOT

OPS = Path(ROOT, "ops")
RULES = OPS / "prometheus" / "alerts.yaml"
DASHBOARD = OPS / "grafana" / "concordia.json"
# A series name, then optionally its label matchers.
SELECTOR = re.compile(r"\b(concordia_[a-z_]+)(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def _exported() -> dict[str, set[str]]:
    """Each series /metrics exports, with its labels, as a scrape of a busy server shows."""
    from concordia.service.metrics import Metrics

    metrics = Metrics()
    metrics.step_seconds.labels("checkout", "charge", "action", "succeeded").observe(0.1)
    metrics.webhooks.labels("accepted").inc()
    metrics.runs_requested.labels("started").inc()
    counts = [("checkout", str(status), 1) for status in RUN_STATUSES]
    text = metrics.render(counts, (1, "2026-12-07T00:00:00Z"), now=1.9e9,
                          leases=[("checkout", "w1", 1.0)]).decode()
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def _expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())
    found = [(rule["alert"], rule["expr"]) for group in rules["groups"]
             for rule in group["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    found += [(panel["title"], target["expr"]) for panel in dashboard["panels"]
              for target in panel["targets"]]
    return found


def test_the_alerts_cover_what_operators_must_hear_of() -> None:
    exprs = dict(_expressions())
    assert 'status="stuck"' in exprs["ConcordiaRunsStuck"]
    assert 'status="compensation_failed"' in exprs["ConcordiaCompensationFailed"]
    assert "concordia_runs_lease_expired" in exprs["ConcordiaLeaseExpired"]
    assert "concordia_webhook_requests_total" in exprs["ConcordiaWebhookRefusals"]
    assert "concordia_outbox_lag_seconds" in exprs["ConcordiaOutboxLag"]


@pytest.mark.parametrize(("where", "expr"), _expressions(), ids=[w for w, _ in _expressions()])
def test_every_series_label_and_status_used_is_exported(where: str, expr: str) -> None:
    exported = _exported()
    used = SELECTOR.findall(expr)
    assert used, f"{where}: no concordia series in {expr!r}"
    for name, matchers in used:
        assert name in exported, f"{where}: /metrics exports no {name}"
        for label, op, value in MATCHER.findall(matchers):
            assert label in exported[name], f"{where}: {name} has no label {label!r}"
            if label == "status" and op == "=":
                assert value in RUN_STATUSES, f"{where}: no run status {value!r}"
    labels = set().union(*(exported[name] for name, _ in used))
    for group in GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            assert label in labels | {"le"}, f"{where}: groups by unknown label {label!r}"


def test_the_dashboard_is_grafana_json_with_a_data_source_to_pick() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "concordia"
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8


def test_lease_expiry_counts_only_lapsed_leases() -> None:
    from concordia.service.metrics import Metrics

    counts = [("a", "running", 3), ("b", "running", 1)]
    text = Metrics().render(counts, (0, None), now=100.0, leases=[
        ("a", "w1", 50.0), ("a", "w2", 150.0), ("a", None, None), ("b", "w3", 120.0)]).decode()
    values = {(s.name, s.labels.get("saga")): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert values[("concordia_runs_lease_expired", "a")] == 1
    assert values[("concordia_runs_lease_expired", "b")] == 0


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
