"""The shared "first seen" record: when the janitor first saw an item in a state it cannot date.

Where an engine gives no trustworthy time (a dead container's zero timestamps, an image's
build time, an orphaned holder), age counts from the first sweep that saw it so. The record
lives in Redis, one hash per (host, kind), so every worker and the CLI share it; it expires
with its TTL when no sweep refreshes it, and a lost record means "seen now": unknown age
never becomes old age.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import redis

from janitor import keys
from janitor.vocabulary import milliseconds


def first_seen(
    client: redis.Redis[bytes],
    host: str,
    kind: str,
    item_ids: Iterable[str],
    now: datetime,
    *,
    ttl: timedelta,
    record: bool = True,
) -> dict[str, datetime]:
    """For each item, when it was first seen: recorded now for the ones never seen before.

    Items not among `item_ids` are forgotten, so an item that leaves the state and comes back
    starts again from "now". `now` is the daemon's clock, like every other age. With `record`
    false (a dry run) the record is only read: unknown items count as seen now.
    """
    ids = sorted(set(item_ids))
    key = keys.first_seen(host, kind)
    if not record:
        known = {field.decode(): value.decode() for field, value in client.hgetall(key).items()}
        return {i: datetime.fromisoformat(known[i]) if i in known else now for i in ids}
    if not ids:
        client.delete(key)
        return {}
    seen = now.isoformat()
    pipeline = client.pipeline(transaction=True)
    for item_id in ids:
        pipeline.hsetnx(key, item_id, seen)
    pipeline.hgetall(key)
    pipeline.pexpire(key, milliseconds(ttl))
    recorded: dict[bytes, bytes] = pipeline.execute()[-2]
    stale = [field for field in recorded if field.decode() not in ids]
    if stale:
        client.hdel(key, *stale)
    return {item_id: datetime.fromisoformat(recorded[item_id.encode()].decode()) for item_id in ids}
