"""Thin Celery tasks: settings + host name -> pacing -> one sweep -> the contract's report."""

from __future__ import annotations

import functools
import time

import redis
import structlog

from janitor import metrics, pacing
from janitor.celery_app import app
from janitor.locks import REDIS_ERRORS
from janitor.model import Task
from janitor.schedule import time_limits
from janitor.settings import Settings, cached_settings
from janitor.sweep import sweep_host

log = structlog.get_logger(__name__)


@functools.cache
def _redis() -> redis.Redis[bytes]:
    # Made on first use, so each prefork child opens its own connections after the fork.
    settings = cached_settings()
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=settings.docker_timeout.total_seconds(),
        health_check_interval=30,
    )


def _sweep(
    settings: Settings, host: str, task: Task, notes: dict[str, object] | None = None
) -> dict[str, object] | None:
    deadline = time.monotonic() + time_limits(settings, task).cutoff.total_seconds()
    report = sweep_host(settings, host, task, redis_client=_redis(), deadline=deadline)
    if report is None:
        metrics.record_skipped(host, task.value)
        return None
    metrics.record(report)
    return {**report.to_dict(), **(notes or {})}


@app.task(name="janitor.kill_ghosts")
def kill_ghosts(host: str) -> dict[str, object] | None:
    """Kill the ghosts of one configured host: running containers past their budget."""
    settings = cached_settings()
    settings.host(host)  # UnknownHostError: rejected before anything is touched
    result = _sweep(settings, host, Task.KILL_GHOSTS)
    # Ghost ticks are the frequent ones: they also watch the host's pressure and start the
    # stopped sweep early when it rises, instead of waiting for the remove interval.
    try:
        under = pacing.check_pressure(settings, host, _redis())
        if under and pacing.claim_pressure_sweep(_redis(), host, settings.kill_interval):
            log.info("pressure_sweep_started", host=host)
            remove_stopped.apply_async(args=(host,), expires=settings.kill_interval.total_seconds())
    except REDIS_ERRORS as exc:
        log.warning("pressure_unchecked", host=host, error=str(exc))
    return result


@app.task(name="janitor.remove_stopped")
def remove_stopped(host: str) -> dict[str, object] | None:
    """Remove the stopped containers of one configured host that are past their grace,
    unless a spawn spike defers it (then it checks again shortly, up to JANITOR_MAX_DEFER)."""
    settings = cached_settings()
    settings.host(host)
    try:
        plan = pacing.plan_removal(settings, host, _redis())
    except REDIS_ERRORS as exc:
        # Pacing is an optimisation; the sweep itself reports Redis trouble as a failure.
        log.warning("pacing_unchecked", host=host, error=str(exc))
        return _sweep(settings, host, Task.REMOVE_STOPPED)
    if plan.pace is pacing.Pace.DEFER:
        if pacing.claim_recheck(_redis(), host):
            recheck = pacing.RECHECK.total_seconds()
            remove_stopped.apply_async(args=(host,), countdown=recheck, expires=recheck * 3)
        return {"task": Task.REMOVE_STOPPED.value, "host": host, "status": "deferred", **plan.notes}
    return _sweep(plan.settings, host, Task.REMOVE_STOPPED, plan.notes)
