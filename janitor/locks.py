"""Coordination through Redis: the per-(host, task) lease, the record of each host's daemon,
and the one-caller claims that keep workers from starting the same early sweep twice.

A Redis that cannot be reached is RedisUnavailableError, a failed sweep; only a lease that
someone else really holds is LeaseHeldError, a skipped one.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Protocol

import redis
import redis.exceptions

from janitor import keys
from janitor.errors import (
    LeaseHeldError,
    LeaseLostError,
    RedisUnavailableError,
    WrongHostError,
)
from janitor.vocabulary import milliseconds

# Extends the lease only while it is still ours: a lease that expired and was taken by
# another sweep must not be stretched by the one that lost it.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""

# Redis unreachable, or answering with an error (READONLY after a failover, OOM): either way
# nothing it says can be relied on for this step.
REDIS_ERRORS = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ResponseError,
    OSError,
)


class Lease(Protocol):
    def confirm(self) -> None:
        """Raise LeaseLostError unless this sweep still holds the lease (and extend it)."""

    def release(self) -> None: ...


class NoLease:
    """What a CLI sweep holds when Redis cannot be reached: nothing to confirm."""

    def confirm(self) -> None:
        return None

    def release(self) -> None:
        return None


class RedisLease:
    """A token-checked Redis key with a TTL: it dies with its holder, not before."""

    def __init__(self, client: redis.Redis[bytes], host: str, task: str, ttl: timedelta) -> None:
        self._client = client
        self.key = keys.sweep_lease(host, task)
        self._ttl_ms = milliseconds(ttl)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> RedisLease:
        try:
            taken = self._client.set(self.key, self.token, nx=True, px=self._ttl_ms)
            holder = None if taken else self._client.get(self.key)
        except REDIS_ERRORS as exc:
            raise RedisUnavailableError(
                f"Redis unreachable while taking {self.key}: {exc}"
            ) from exc
        if not taken:
            shown = holder.decode() if isinstance(holder, bytes) else holder
            raise LeaseHeldError(f"{self.key} is held by {shown}")
        return self

    def confirm(self) -> None:
        try:
            still_ours = self._renew(keys=[self.key], args=[self.token, self._ttl_ms])
        except REDIS_ERRORS as exc:
            raise LeaseLostError(f"cannot confirm {self.key}: Redis unreachable ({exc})") from exc
        if not still_ours:
            raise LeaseLostError(f"{self.key} expired or was taken over (Redis restarted?)")

    def release(self) -> None:
        try:
            self._release(keys=[self.key], args=[self.token])
        except REDIS_ERRORS:
            # It expires on its own; a sweep that ended must not fail for a cleanup step.
            return


def claim_once(client: redis.Redis[bytes], key: str, hold: timedelta) -> bool:
    """True for the one caller, of every worker, that claims `key` within `hold`."""
    return bool(client.set(key, "1", nx=True, px=milliseconds(hold)))


def check_daemon_identity(client: redis.Redis[bytes], host: str, daemon_id: str) -> bool:
    """Record the daemon ID a host name reaches the first time; WrongHostError if it changed.

    Returns True when this call recorded it (the first sweep of that host name).
    """
    key = keys.daemon_identity(host)
    try:
        recorded = client.set(key, daemon_id, nx=True)
        known = None if recorded else client.get(key)
    except REDIS_ERRORS as exc:
        raise RedisUnavailableError(f"Redis unreachable while reading {key}: {exc}") from exc
    if recorded:
        return True
    known_id = known.decode() if isinstance(known, bytes) else str(known)
    if known_id != daemon_id:
        raise WrongHostError(
            f"host {host!r} now reaches daemon {daemon_id}, but it reached {known_id} before; "
            f"refusing to act. If the daemon was replaced on purpose: redis-cli DEL {key}"
        )
    return False
