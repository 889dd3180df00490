"""The beat schedule, time limits and routing, as plain data built from settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from janitor.model import Task
from janitor.settings import Settings, hard_limit, soft_limit

TASK_NAMES = {
    Task.KILL_GHOSTS: "janitor.kill_ghosts",
    Task.REMOVE_STOPPED: "janitor.remove_stopped",
    Task.PRUNE_UNUSED: "janitor.prune_unused",
}
DEFAULT_QUEUE = "janitor"


@dataclass(frozen=True, slots=True)
class TimeLimits:
    """Nested bounds of one task: slowest Docker call < cutoff < soft < hard < lease <= interval.

    `cutoff` is when the sweep stops starting actions, so the ones in flight end before the
    soft limit; the lease outlives the hard limit, so a sweep killed by it is never overlapped.
    """

    interval: timedelta
    cutoff: timedelta
    soft: timedelta
    hard: timedelta
    expires: timedelta


def time_limits(settings: Settings, task: Task) -> TimeLimits:
    interval = settings.interval(task.value)
    slowest_call = settings.docker_timeout
    if task is Task.KILL_GHOSTS:
        slowest_call += settings.stop_timeout
    return TimeLimits(
        interval=interval,
        cutoff=soft_limit(interval) - slowest_call,
        soft=soft_limit(interval),
        hard=hard_limit(interval),
        # A tick still queued after this is stale: the next one is about to come.
        expires=interval * 0.9,
    )


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """One entry per (task, host), each on its own interval, routed to the host's queue; the
    unused prune only when JANITOR_PRUNE_INTERVAL turns it on."""
    schedule: dict[str, dict[str, Any]] = {}
    for host in settings.hosts:
        for task, task_name in TASK_NAMES.items():
            if task is Task.PRUNE_UNUSED and not settings.prunes:
                continue
            limits = time_limits(settings, task)
            schedule[f"{task.value}:{host.name}"] = {
                "task": task_name,
                "schedule": limits.interval.total_seconds(),
                "args": (host.name,),
                "options": {"queue": host.queue, "expires": limits.expires.total_seconds()},
            }
    return schedule


def task_annotations(settings: Settings) -> dict[str, dict[str, float]]:
    return {
        task_name: {
            "soft_time_limit": time_limits(settings, task).soft.total_seconds(),
            "time_limit": time_limits(settings, task).hard.total_seconds(),
        }
        for task, task_name in TASK_NAMES.items()
    }


def queue_for(settings: Settings, host_name: object) -> str:
    """The queue of a configured host; anything else goes to the queue every worker reads,
    where the worker rejects it as an unknown host instead of it waiting forever."""
    for host in settings.hosts:
        if host.name == host_name:
            return host.queue
    return DEFAULT_QUEUE
