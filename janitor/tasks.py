"""Thin Celery tasks: settings + host name -> one sweep -> the contract's report."""

from __future__ import annotations

import functools
import time

import redis

from janitor import metrics
from janitor.celery_app import app
from janitor.model import Task
from janitor.schedule import time_limits
from janitor.settings import cached_settings
from janitor.sweep import sweep_host


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


def _sweep(host: str, task: Task) -> dict[str, object] | None:
    settings = cached_settings()
    settings.host(host)  # UnknownHostError: rejected before anything is touched
    deadline = time.monotonic() + time_limits(settings, task).cutoff.total_seconds()
    report = sweep_host(settings, host, task, redis_client=_redis(), deadline=deadline)
    if report is None:
        metrics.record_skipped(host, task.value)
        return None
    metrics.record(report)
    return report.to_dict()


@app.task(name="janitor.kill_ghosts")
def kill_ghosts(host: str) -> dict[str, object] | None:
    """Kill the ghosts of one configured host: running containers past their budget."""
    return _sweep(host, Task.KILL_GHOSTS)


@app.task(name="janitor.remove_stopped")
def remove_stopped(host: str) -> dict[str, object] | None:
    """Remove the stopped containers of one configured host that are past their grace."""
    return _sweep(host, Task.REMOVE_STOPPED)
