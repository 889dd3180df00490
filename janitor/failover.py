"""Noticing that the Redis master changed: a Sentinel failover (replication is asynchronous, so
the promoted replica may lack the last writes) or a restart that forgot its data.

The master's run id is recorded in Redis and remembered by each process; when either differs
from the run id the master reports now, owner leases are unknown for one lease TTL: a lease
renewed on the old master just before the change may be missing on the new one, and a
missing lease must not make a container a ghost.
"""

from __future__ import annotations

from datetime import timedelta

import redis

from janitor import keys
from janitor.errors import LeasesUnknownError
from janitor.vocabulary import milliseconds

# The run id this process saw last; one Redis per process in the janitor.
_remembered: dict[str, str] = {}


def master_run_id(client: redis.Redis[bytes]) -> str:
    return str(client.info("server")["run_id"])


def check_leases_readable(client: redis.Redis[bytes], lease_ttl: timedelta) -> None:
    """Raise LeasesUnknownError within `lease_ttl` of a change of the Redis master."""
    run_id = master_run_id(client)
    pipeline = client.pipeline(transaction=False)
    pipeline.set(keys.REDIS_MASTER_RUN_ID, run_id, get=True)
    pipeline.pttl(keys.LEASES_UNKNOWN)
    previous_raw, unknown_ms = pipeline.execute()
    recorded = previous_raw.decode() if isinstance(previous_raw, bytes) else None
    remembered = _remembered.get("run_id")
    _remembered["run_id"] = run_id
    changed = (recorded is not None and recorded != run_id) or (
        remembered is not None and remembered != run_id
    )
    if changed:
        # NX: every process notices the change; the first one starts the window, no one
        # stretches it.
        ttl_ms = milliseconds(lease_ttl)
        client.set(keys.LEASES_UNKNOWN, run_id, px=ttl_ms, nx=True)
        raise LeasesUnknownError(
            f"the Redis master changed (run id {run_id[:12]}, was "
            f"{(recorded or remembered or '?')[:12]}): owner leases unknown for "
            f"{lease_ttl.total_seconds():.0f}s"
        )
    if unknown_ms is not None and unknown_ms > 0:
        raise LeasesUnknownError(
            f"the Redis master changed lately: owner leases unknown for {unknown_ms / 1000:.0f}s"
        )
