"""Owner leases: a spawning service keeps its containers alive by renewing one Redis key.

A container labelled `janitor.lease=<key>` is a ghost as soon as `janitor:lease:<key>` is
gone from Redis (its owner stopped renewing it), whatever its runtime budget says, once it
has run for JANITOR_LEASE_GRACE. Spawning services use this module, or the same Redis
commands from any language:

    lease = OwnerLease(redis.Redis.from_url(url), "session-42", ttl=timedelta(minutes=2))
    lease.create()
    client.containers.run(image, labels=lease.labels, ...)
    ...  # call lease.renew() more often than the TTL, or use `with lease.kept_alive():`
    lease.release()  # its containers become ghosts at the next kill sweep
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import redis

from janitor import keys
from janitor.vocabulary import LEASE_LABEL, milliseconds

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"lease key {key!r} must match {_KEY.pattern}")
    return key


class OwnerLease:
    """One lease key that its owner creates, renews within `ttl`, and releases when done."""

    def __init__(self, client: redis.Redis[bytes], key: str, ttl: timedelta) -> None:
        self.key = check_key(key)
        self._client = client
        self._ttl_ms = milliseconds(ttl)

    @property
    def labels(self) -> dict[str, str]:
        """The label that ties a container to this lease."""
        return {LEASE_LABEL: self.key}

    def create(self) -> None:
        self._client.set(keys.owner_lease(self.key), "1", px=self._ttl_ms)

    def renew(self) -> bool:
        """Extend the lease; False when it had already expired (its containers may be gone)."""
        renewed = bool(self._client.pexpire(keys.owner_lease(self.key), self._ttl_ms))
        if not renewed:
            self.create()
        return renewed

    def release(self) -> None:
        self._client.delete(keys.owner_lease(self.key))

    @contextmanager
    def kept_alive(self, every: timedelta | None = None) -> Iterator[OwnerLease]:
        """Create the lease, renew it from a thread every third of the TTL, release it at exit."""
        period = (every or timedelta(milliseconds=self._ttl_ms / 3)).total_seconds()
        stop = threading.Event()

        def renew_until_stopped() -> None:
            while not stop.wait(period):
                self.renew()

        self.create()
        renewer = threading.Thread(target=renew_until_stopped, daemon=True, name="lease")
        renewer.start()
        try:
            yield self
        finally:
            stop.set()
            renewer.join()
            self.release()


def dead_leases(client: redis.Redis[bytes], lease_keys: Iterable[str]) -> frozenset[str]:
    """The keys among `lease_keys` whose lease no longer exists, in one round trip."""
    ordered = sorted(set(lease_keys))
    if not ordered:
        return frozenset()
    pipeline = client.pipeline(transaction=False)
    for key in ordered:
        pipeline.exists(keys.owner_lease(key))
    alive = pipeline.execute()
    return frozenset(key for key, exists in zip(ordered, alive, strict=True) if not exists)
