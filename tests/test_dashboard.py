"""The Grafana dashboard is importable JSON and charts only metrics the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.metrics import MetricWrapperBase

from janitor import metrics

DASHBOARD = Path(__file__).resolve().parents[1] / "grafana" / "container-janitor.json"


def exported_names() -> set[str]:
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base = value._name  # prometheus_client keeps the name and type private
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
            names |= {base + s for s in suffixes.get(value._type, [""])}
    return names


def test_dashboard_is_importable_and_uses_only_real_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "container-janitor"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bjanitor_[a-z_]+\b", e)}
    assert used, "the dashboard charts nothing"
    assert used <= exported_names()
    # Every metric the contract names has a panel.
    for contract_metric in (
        "janitor_actions_total",
        "janitor_sweeps_total",
        "janitor_sweep_duration_seconds_bucket",
        "janitor_managed_containers",
        "janitor_reclaimed_bytes_total",
    ):
        assert contract_metric in used
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


ALERTS = DASHBOARD.parents[1] / "contrib" / "prometheus" / "alerts.yml"


def test_the_dashboard_shows_hosts_not_swept_for_3_intervals() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Not swept for 3 intervals"]
    (target,) = panel["targets"]
    assert "janitor_last_success_timestamp_seconds" in target["expr"]
    assert "3 * 60" in target["expr"]
    assert "3 * 300" in target["expr"]
    reasons = [
        t["expr"] for p in dashboard["panels"] for t in p["targets"] if "reason" in t["expr"]
    ]
    assert reasons, "the actions' reason label has a panel"


def test_the_example_alerts_use_only_real_metrics_and_match_the_panel() -> None:
    rules = [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]
    used = {name for rule in rules for name in re.findall(r"\bjanitor_[a-z_]+\b", rule["expr"])}
    assert used <= exported_names()
    (not_swept,) = [rule for rule in rules if rule["alert"] == "JanitorNotSwept"]
    dashboard = json.loads(DASHBOARD.read_text())
    (panel,) = [p for p in dashboard["panels"] if p["title"] == "Not swept for 3 intervals"]
    assert _bare(not_swept["expr"]) == _bare(panel["targets"][0]["expr"])


def _bare(expr: str) -> str:
    """The expression without whitespace and label matchers (the panel filters by $host)."""
    return re.sub(r"\s+|\{[^}]*\}", "", expr)
