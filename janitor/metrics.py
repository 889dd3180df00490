"""Prometheus metrics fed from sweep reports, summed across Celery's prefork processes.

prometheus_client keeps per-process values in files under PROMETHEUS_MULTIPROC_DIR, which
must be in the environment before the first value is made: `celery_app` sets it first.
"""

from __future__ import annotations

import collections
import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

from janitor.model import Status, SweepReport, Task

if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not getattr(
    values.ValueClass, "_multiprocess", False
):
    # Celery's command line loads Flower's plugin, which imports prometheus_client before our
    # app can set the directory; choose the storage again, before any labelled value exists.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]

ACTIONS = Counter(
    "janitor_actions_total",
    "Actions taken on containers, by outcome and reason",
    ["host", "task", "outcome", "reason"],
)
LAST_SUCCESS = Gauge(
    "janitor_last_success_timestamp_seconds",
    "When the last sweep with status ok finished, on the daemon's clock (Unix seconds)",
    ["host", "task"],
    multiprocess_mode="max",
)
SWEEP_DURATION = Histogram(
    "janitor_sweep_duration_seconds",
    "Wall time of one sweep of one host",
    ["host", "task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
SWEEPS = Counter(
    "janitor_sweeps_total",
    "Sweeps by final status (skipped: lease held)",
    ["host", "task", "status"],
)
MANAGED = Gauge(
    "janitor_managed_containers",
    "Containers under the selector at the last sweep, by state",
    ["host", "state"],
    multiprocess_mode="mostrecent",
)
DEFERRED = Gauge(
    "janitor_sweep_deferred",
    "1 while the stopped-container sweep of a host is deferred by a spawn spike",
    ["host"],
    multiprocess_mode="mostrecent",
)
DEFERRALS = Counter(
    "janitor_deferrals_total", "Stopped-container sweeps put off by a spawn spike", ["host"]
)
SPAWN_RATE = Gauge(
    "janitor_spawn_rate_per_minute",
    "Container starts per minute over the last 4 s, as the spike follower sees them",
    ["host"],
    multiprocess_mode="mostrecent",
)
PRESSURE = Gauge(
    "janitor_host_pressure_ratio",
    "Share of memory or CPU in use on the host at the last reading (0..1)",
    ["host", "resource"],
    multiprocess_mode="mostrecent",
)
UNDER_PRESSURE = Gauge(
    "janitor_host_under_pressure",
    "1 while the host is above its pressure watermark (until it falls under the low one)",
    ["host"],
    multiprocess_mode="mostrecent",
)
RECLAIMED = Counter(
    "janitor_reclaimed_bytes_total",
    "Bytes freed by removals, by kind (container: 0, its SizeRw is not read)",
    ["host", "kind"],
)


def record(report: SweepReport) -> None:
    labels = {"host": report.host, "task": report.task.value}
    SWEEPS.labels(status=report.status.value, **labels).inc()
    SWEEP_DURATION.labels(**labels).observe(report.duration_s)
    by_outcome_and_reason = collections.Counter(
        (result.outcome.value, result.action.reason.value) for result in report.results
    )
    for (outcome, reason), count in by_outcome_and_reason.items():
        ACTIONS.labels(outcome=outcome, reason=reason, **labels).inc(count)
    if report.status is Status.OK and report.daemon_time is not None:
        LAST_SUCCESS.labels(**labels).set(report.daemon_time.timestamp())
    for kind, freed in report.reclaimed.items():
        RECLAIMED.labels(host=report.host, kind=kind).inc(freed)
    if report.task is Task.REMOVE_STOPPED:
        # Present from the first sweep, so a dashboard's rate() has a series to start from.
        RECLAIMED.labels(host=report.host, kind="container").inc(0)
    if report.census:
        for state in set(report.census) | {"running", "exited", "created"}:
            MANAGED.labels(host=report.host, state=state).set(report.census.get(state, 0))


def record_skipped(host: str, task: str) -> None:
    SWEEPS.labels(host=host, task=task, status="skipped").inc()


def serve(port: int) -> None:
    """Serve /metrics on `port`, summing what every worker process recorded."""
    registry = CollectorRegistry()
    # prometheus_client leaves its multiprocess helpers unannotated.
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, registry=registry)


def forget_process(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
