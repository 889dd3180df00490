"""The janitor service as the tests run it: fast intervals, a clean environment, and what the
service left in the Redis result backend and broker.

The Celery processes themselves are the development wing's (`sandbox.celery_processes`);
polling with a deadline is `janitor.children.wait_for`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from sandbox.engines import is_podman, selected_engine
from support.cli import janitor_env

# Short enough that a test sees several ticks in seconds, long enough for the nested limits:
# settings refuse an interval whose soft limit (0.8 x) is not above the slowest Docker call.
SERVICE = {
    "kill_interval": "2s",
    "remove_interval": "3s",
    "docker_timeout": "1s",
    "stop_timeout": "0s",
    "log_level": "INFO",
    "log_format": "json",
    # Pressure response reads this machine's /proc, which a busy test machine trips at
    # random: it would start extra stopped sweeps and upset tick counts. Its tests turn it on.
    "pressure_high": "0",
}
# Podman's /info (every tick's identity) runs conmon and the OCI runtime for their versions:
# 0.7 s at a load average of 12 on 2 cores, past 2 s at 50, so its service gets longer calls
# and intervals that still leave 0.8 x 7s - 3s = 2.6 s of each kill sweep for its kills.
PODMAN_SERVICE = {"kill_interval": "7s", "remove_interval": "8s", "docker_timeout": "3s"}
RESULT_KEYS = "celery-task-meta-*"


def service_env(hosts: Mapping[str, str], redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a janitor service: JANITOR_* only from here, fast intervals."""
    timings = SERVICE | (PODMAN_SERVICE if is_podman(selected_engine()) else {})
    env = janitor_env(hosts, redis_url, **{**timings, **overrides})
    # Nothing from the caller's Celery or Flower setup may leak in either.
    for name in [k for k in env if k.startswith(("CELERY_", "FLOWER_"))]:
        del env[name]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def task_results(redis_url: str) -> list[dict[str, Any]]:
    """Every task result in the Redis result backend (keys celery-task-meta-<id>), as stored."""
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=RESULT_KEYS, count=1000))
        raw = client.mget(keys) if keys else []
    return [json.loads(value) for value in raw if value is not None]


def task_result(redis_url: str, task_id: str) -> dict[str, Any] | None:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        raw = client.get(f"celery-task-meta-{task_id}")
    return None if raw is None else dict(json.loads(raw))


def reports(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep reports among results: successful tasks that swept (not skipped or deferred)."""
    return [
        r["result"]
        for r in results
        if r.get("status") == "SUCCESS"
        and isinstance(r.get("result"), dict)
        and r["result"]["status"] not in ("skipped", "deferred")
    ]


def queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """Messages waiting in a Celery queue on the Redis broker (a list named as the queue)."""
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        raw = client.lrange(queue, 0, -1)
    return [json.loads(message) for message in raw]
