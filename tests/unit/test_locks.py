"""The sweep lease and the daemon identity record, against a real Redis and an unreachable one.

Redis trouble is never a lease held by someone else: it fails the sweep, it does not skip it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from janitor import keys
from janitor.errors import LeaseHeldError, LeaseLostError, RedisUnavailableError, WrongHostError
from janitor.locks import RedisLease, check_daemon_identity

HOST, TASK = "alpha", "kill-ghosts"
TTL = timedelta(seconds=30)


@pytest.fixture
def unreachable() -> Iterator[redis.Redis[bytes]]:
    """A client of a loopback port nobody listens on, failing at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client: redis.Redis[bytes] = redis.Redis(
        "127.0.0.1",
        port,
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    yield client
    client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


def _lease(client: redis.Redis[bytes], ttl: timedelta = TTL) -> RedisLease:
    return RedisLease(client, HOST, TASK, ttl)


def test_an_unreachable_redis_fails_the_lease_instead_of_reading_as_held(
    unreachable: redis.Redis[bytes],
) -> None:
    lease = _lease(unreachable)
    with pytest.raises(RedisUnavailableError) as raised:
        lease.acquire()
    assert keys.sweep_lease(HOST, TASK) in str(raised.value)
    assert "Redis unreachable" in str(raised.value)
    with pytest.raises(LeaseLostError, match="Redis unreachable"):
        lease.confirm()
    lease.release()  # the lease expires on its own: nothing to raise


def test_an_unreachable_redis_fails_the_identity_check(unreachable: redis.Redis[bytes]) -> None:
    with pytest.raises(RedisUnavailableError) as raised:
        check_daemon_identity(unreachable, HOST, "DAEMON:ONE")
    assert keys.daemon_identity(HOST) in str(raised.value)


def test_a_free_lease_is_taken_with_our_token_and_the_ttl(client: redis.Redis[bytes]) -> None:
    lease = _lease(client).acquire()
    key = keys.sweep_lease(HOST, TASK)
    assert client.get(key) == lease.token.encode()
    assert 0 < client.pttl(key) <= TTL.total_seconds() * 1000


def test_a_held_lease_names_its_holder(client: redis.Redis[bytes]) -> None:
    first = _lease(client).acquire()
    with pytest.raises(LeaseHeldError) as raised:
        _lease(client).acquire()
    assert str(raised.value) == f"{keys.sweep_lease(HOST, TASK)} is held by {first.token}"


def test_confirm_extends_a_lease_still_ours(client: redis.Redis[bytes]) -> None:
    lease = _lease(client).acquire()
    key = keys.sweep_lease(HOST, TASK)
    client.pexpire(key, 1000)
    lease.confirm()
    assert client.pttl(key) > 1000


@pytest.mark.parametrize("what_happened", ["taken over", "expired"])
def test_confirm_after_losing_the_lease_raises(
    client: redis.Redis[bytes], what_happened: str
) -> None:
    lease = _lease(client).acquire()
    key = keys.sweep_lease(HOST, TASK)
    if what_happened == "taken over":
        client.set(key, "another-worker:1:abc")
    else:
        client.delete(key)
    with pytest.raises(LeaseLostError, match="expired or was taken over"):
        lease.confirm()
    # Losing it must not stretch the new holder's lease or bring ours back.
    assert client.get(key) == (b"another-worker:1:abc" if what_happened == "taken over" else None)


def test_release_deletes_only_our_own_token(client: redis.Redis[bytes]) -> None:
    key = keys.sweep_lease(HOST, TASK)
    lease = _lease(client).acquire()
    client.set(key, "another-worker:1:abc")
    lease.release()
    assert client.get(key) == b"another-worker:1:abc"

    client.delete(key)
    ours = _lease(client).acquire()
    ours.release()
    assert client.exists(key) == 0


def test_the_daemon_identity_is_recorded_once_and_a_different_daemon_refused(
    client: redis.Redis[bytes],
) -> None:
    assert check_daemon_identity(client, HOST, "DAEMON:ONE") is True
    assert check_daemon_identity(client, HOST, "DAEMON:ONE") is False
    with pytest.raises(WrongHostError) as raised:
        check_daemon_identity(client, HOST, "DAEMON:TWO")
    message = str(raised.value)
    assert "DAEMON:ONE" in message
    assert "DAEMON:TWO" in message
    assert f"redis-cli DEL {keys.daemon_identity(HOST)}" in message
    assert client.get(keys.daemon_identity(HOST)) == b"DAEMON:ONE"
