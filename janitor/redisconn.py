"""The janitor's Redis clients, made in one place from JANITOR_REDIS_URL: a plain Redis, or the
master that Redis Sentinels name, followed across a failover.

Tasks, the CLI, pacing and `janitor run` take their clients from here; Celery's broker and
result backend take their URL and transport options from `celery_redis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import redis
from redis.sentinel import Sentinel

from janitor.config_syntax import is_sentinel_url, parse_sentinel_url
from janitor.settings import Settings


def connect(
    url: str,
    *,
    master: str = "",
    connect_timeout: float = 2.0,
    timeout: float | None = None,
    health_check_interval: int = 0,
) -> redis.Redis[bytes]:
    """A client of the Redis at `url`; for `sentinel://`, of the master named `master`.

    A Sentinel-managed client asks the Sentinels for the master again whenever a connection
    fails, so after a failover the next command reaches the promoted replica.
    """
    if not is_sentinel_url(url):
        client: redis.Redis[bytes] = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            health_check_interval=health_check_interval,
        )
        return client
    if not master:
        raise ValueError("a sentinel:// URL needs the master's name")
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(parsed.sentinels),
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout or connect_timeout,
    )
    managed: redis.Redis[bytes] = sentinel.master_for(
        master,
        db=parsed.db,
        password=parsed.password,
        socket_connect_timeout=connect_timeout,
        socket_timeout=timeout,
        health_check_interval=health_check_interval,
    )
    return managed


def redis_client(
    settings: Settings,
    *,
    connect_timeout: float = 2.0,
    timeout: float | None = None,
    health_check_interval: int = 0,
) -> redis.Redis[bytes]:
    """The janitor's client of JANITOR_REDIS_URL (and JANITOR_REDIS_MASTER)."""
    return connect(
        settings.redis_url,
        master=settings.redis_master,
        connect_timeout=connect_timeout,
        timeout=timeout,
        health_check_interval=health_check_interval,
    )


@dataclass(frozen=True, slots=True)
class CeleryRedis:
    """What Celery's broker and result backend are given for JANITOR_REDIS_URL."""

    url: str
    transport_options: dict[str, object] = field(default_factory=dict)


def celery_redis(settings: Settings) -> CeleryRedis:
    """kombu and Celery spell Sentinels as `sentinel://h:p/db;sentinel://h:p/db` plus the
    master's name in the transport options; a plain URL goes through as it is."""
    if not is_sentinel_url(settings.redis_url):
        return CeleryRedis(settings.redis_url)
    parsed = parse_sentinel_url(settings.redis_url)
    auth = "" if parsed.password is None else f":{quote(parsed.password, safe='')}@"
    url = ";".join(
        f"sentinel://{auth}{_netloc(host)}:{port}/{parsed.db}" for host, port in parsed.sentinels
    )
    return CeleryRedis(url, {"master_name": settings.redis_master})


def _netloc(host: str) -> str:
    return f"[{host}]" if ":" in host else host
