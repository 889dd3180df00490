"""The shared first-seen record against a real Redis: kept, forgotten, expiring."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis

from janitor import keys
from janitor.firstseen import first_seen

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
TTL = timedelta(minutes=30)


def test_the_first_sighting_is_kept_and_absent_items_are_forgotten(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    assert first_seen(client, "alpha", "dead", ["a", "b"], NOW, ttl=TTL) == {"a": NOW, "b": NOW}
    later = NOW + timedelta(minutes=5)
    # "a" keeps its first sighting; "b" left the state and is forgotten; "c" is new.
    assert first_seen(client, "alpha", "dead", ["a", "c"], later, ttl=TTL) == {
        "a": NOW,
        "c": later,
    }
    assert first_seen(client, "alpha", "dead", ["b"], later, ttl=TTL) == {"b": later}
    assert 0 < client.pttl(keys.first_seen("alpha", "dead")) <= TTL.total_seconds() * 1000


def test_hosts_and_kinds_keep_separate_records(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    first_seen(client, "alpha", "dead", ["a"], NOW, ttl=TTL)
    later = NOW + timedelta(minutes=1)
    assert first_seen(client, "beta", "dead", ["a"], later, ttl=TTL) == {"a": later}
    assert first_seen(client, "alpha", "image", ["a"], later, ttl=TTL) == {"a": later}
    assert first_seen(client, "alpha", "dead", [], later, ttl=TTL) == {}
    assert not client.exists(keys.first_seen("alpha", "dead"))


def test_reading_without_recording_changes_nothing(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    first_seen(client, "alpha", "dead", ["a"], NOW, ttl=TTL)
    later = NOW + timedelta(minutes=5)
    read = first_seen(client, "alpha", "dead", ["a", "b"], later, ttl=TTL, record=False)
    assert read == {"a": NOW, "b": later}
    assert first_seen(client, "alpha", "dead", [], later, ttl=TTL, record=False) == {}
    assert client.hgetall(keys.first_seen("alpha", "dead")) == {b"a": NOW.isoformat().encode()}


def test_a_lost_record_means_seen_now(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    first_seen(client, "alpha", "dead", ["a"], NOW, ttl=TTL)
    client.flushdb()
    later = NOW + timedelta(hours=2)
    assert first_seen(client, "alpha", "dead", ["a"], later, ttl=TTL) == {"a": later}
