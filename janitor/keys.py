"""Every Redis key the janitor reads or writes, named in one place.

Each family has its own prefix, so an operator can list, count or reset one of them with
`redis-cli --scan --pattern 'janitor:<family>:*'` without touching the others.
"""

from __future__ import annotations

# Owner leases are written by spawning services (janitor.lease), in any language.
OWNER_LEASE_PREFIX = "janitor:lease:"


def sweep_lease(host: str, task: str) -> str:
    """The per-(host, task) lease of a sweep; not under janitor:lease:, the owners' family."""
    return f"janitor:sweep:{host}:{task}"


def daemon_identity(host: str) -> str:
    """The daemon a host name reached the first time, so a swapped socket is refused."""
    return f"janitor:daemon-id:{host}"


def owner_lease(key: str) -> str:
    return OWNER_LEASE_PREFIX + key


def pacing(kind: str, host: str) -> str:
    """Pacing and pressure state of a host: deferral start, pending recheck, pressure flag."""
    return f"janitor:pacing:{kind}:{host}"


def spike(host: str) -> str:
    """Whether a spawn spike is on at the host, as a live follower sees it: short-lived, so
    a follower gone quiet leaves no record, which reads as no spike."""
    return f"janitor:spike:{host}"


def first_seen(host: str, kind: str) -> str:
    """When the janitor first saw each item of a kind on a host in some state (a hash)."""
    return f"janitor:first-seen:{host}:{kind}"


def last_report(host: str, task: str) -> str:
    """The last report of a service sweep that was not a dry run, for `janitor status`."""
    return f"janitor:last-report:{host}:{task}"


LAST_REPORT_PREFIX = "janitor:last-report:"


def live_worker(host: str) -> str:
    """Present while a worker serving the host's queue is alive: it refreshes it on a TTL."""
    return f"janitor:live-worker:{host}"


# The run id of the Redis master the janitor last wrote to, and, for one owner-lease TTL after
# it changed (a failover, or a restart that forgot everything), the mark that leases are unknown.
REDIS_MASTER_RUN_ID = "janitor:failover:master-run-id"
LEASES_UNKNOWN = "janitor:failover:leases-unknown"
