"""The Grafana dashboard is importable JSON and charts only metrics the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
