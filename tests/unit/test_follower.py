"""The spike follower: the live event stream as the adapter reads it (against the fake daemon),
and the follower's published state, log lines and removal in the gap (against a scripted
stream, a fake clock and a real private Redis)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs
from support.fakedaemon import EVENTS, FakeDaemon, Reply
from support.fakehost import NOW, FakeHost, emitted

from janitor import follower, keys
from janitor.dockerhost import DockerHost
from janitor.dockerhost.events import follow_starts
from janitor.errors import HostError, HostUnreachableError
from janitor.model import HostConfig
from janitor.spikes import SpikeView

HOST = "alpha"
QUIET = timedelta(milliseconds=200)


def event(action: str, at: datetime, container_id: str = "c1", kind: str = "container") -> bytes:
    nano = int(at.timestamp() * 1e9)
    document = {"Type": kind, "Action": action, "Actor": {"ID": container_id}, "timeNano": nano}
    return (json.dumps(document) + "\n").encode()


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    with closing(FakeDaemon()) as fake:
        yield fake


def test_the_stream_yields_each_start_once_and_filters_what_the_engine_did_not(
    daemon: FakeDaemon,
) -> None:
    # Podman 4.3 sends every event whatever the filter; a reopened stream replays its second.
    body = b"".join(
        [
            event("start", NOW, "c1"),
            event("die", NOW + timedelta(seconds=1), "c1"),
            event("start", NOW + timedelta(seconds=1), "i1", kind="image"),
            event("start", NOW + timedelta(seconds=2), "c2"),
        ]
    )
    daemon.answer(EVENTS, Reply(200, body, chunked=True, linger=True))
    with DockerHost(HostConfig(HOST, daemon.url), timeout=timedelta(seconds=2)) as docker:
        stream = follow_starts(docker, quiet=lambda: QUIET)
        with closing(stream):
            items = [next(stream) for _ in range(4)]
    assert items == [NOW, NOW + timedelta(seconds=2), None, None]
    requests = [s for s in daemon.seen if s.route == EVENTS]
    assert "since" not in requests[0].query, "the first stream starts from now"
    # Reopened from when the first stream was opened (its Date, the fake's clock: now).
    since = int(requests[1].query["since"][0])
    assert since >= int((NOW + timedelta(seconds=2)).timestamp())
    assert abs(since - time.time()) < 30
    filters = json.loads(requests[0].query["filters"][0])
    assert filters == {"type": ["container"], "event": ["start"]}


def test_a_stream_the_daemon_ends_or_never_answers_is_a_host_error(daemon: FakeDaemon) -> None:
    daemon.answer(EVENTS, Reply(200, event("start", NOW), chunked=True))
    with DockerHost(HostConfig(HOST, daemon.url), timeout=timedelta(seconds=1)) as docker:
        stream = follow_starts(docker, quiet=lambda: QUIET)
        assert next(stream) == NOW
        with pytest.raises(HostUnreachableError, match="ended its event stream"):
            next(stream)
        daemon.answer(EVENTS, Reply(hang=True))
        with pytest.raises(HostError):
            next(follow_starts(docker, quiet=lambda: QUIET))


def test_a_shorter_quiet_span_after_a_start_reopens_the_stream_from_that_start(
    daemon: FakeDaemon,
) -> None:
    daemon.answer(EVENTS, Reply(200, event("start", NOW, "c1"), chunked=True, linger=True))
    wanted = [timedelta(seconds=60)]
    with DockerHost(HostConfig(HOST, daemon.url), timeout=timedelta(seconds=2)) as docker:
        stream = follow_starts(docker, quiet=lambda: wanted[-1])
        with closing(stream):
            assert next(stream) == NOW
            wanted.append(QUIET)  # as the follower does when that start begins a spike
            # The reopened stream replays that start, dropped as seen, then stays quiet.
            assert next(stream) is None
    first, second, *_ = [s for s in daemon.seen if s.route == EVENTS]
    assert "since" not in first.query
    # From the start's second, not from the reopening's Date: not the long span timing out.
    assert second.query["since"] == [str(int(NOW.timestamp()))]


class Script:
    """A follower's world: a fake clock, and a stream that plays starts and quiet spans on it
    and stops the follower when it has played them all."""

    def __init__(self, items: list[float | None]) -> None:
        # A float is a start that many seconds after NOW; None one quiet span of a second.
        self.items = items
        self.clock = 0.0
        self.stop = threading.Event()
        # The quiet span the follower asked for at each quiet item.
        self.spans: list[timedelta] = []

    def monotonic(self) -> float:
        return self.clock

    def follow(self, docker: Any, *, quiet: Callable[[], timedelta]) -> Iterator[datetime | None]:
        for item in self.items:
            if item is None:
                self.spans.append(quiet())
                self.clock += 1.0
                yield None
            else:
                self.clock = max(self.clock, item)
                yield NOW + timedelta(seconds=item)
        self.stop.set()
        yield None


def burst(count: int, per_second: float, start: float = 0.0) -> list[float | None]:
    return [start + n / per_second for n in range(count)]


def make_follower(
    monkeypatch: pytest.MonkeyPatch, script: Script, client: redis.Redis[bytes], sent: list[str]
) -> follower.HostFollower:
    monkeypatch.setattr(follower, "follow_starts", script.follow)
    monkeypatch.setattr(follower, "DockerHost", lambda config, **_: FakeHost(name=config.name))
    return follower.HostFollower(
        HostConfig(HOST, "unix:///nowhere.sock"),
        spike_rate=60,
        docker_timeout=timedelta(seconds=1),
        client=client,
        start_gap_sweep=sent.append,
        monotonic=script.monotonic,
    )


def test_a_spike_is_published_and_its_end_starts_the_deferred_removal_once(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    client.set(keys.pacing("deferred-since", HOST), NOW.isoformat())
    states: list[bool] = []
    real_publish = follower.publish

    def publish(client: redis.Redis[bytes], host: str, view: Any) -> None:
        real_publish(client, host, view)
        state = follower.read_state(client, host)
        assert state is not None
        states.append(state.spiking)
        ttl = follower.STATE_TTL if state.spiking else follower.CALM_STATE_TTL
        assert 0 < client.pttl(keys.spike(host)) <= ttl.total_seconds() * 1000

    monkeypatch.setattr(follower, "publish", publish)
    sent: list[str] = []
    script = Script([None, *burst(40, 4.0), None, None, None, None, None])
    with capture_logs() as logs:
        make_follower(monkeypatch, script, client, sent).run(script.stop)
        # Another worker's follower saw the same spike end: the removal is not sent twice.
        again = Script([*burst(40, 4.0), None, None, None, None, None])
        make_follower(monkeypatch, again, client, sent).run(again.stop)
    began = emitted(logs, "spike_began", host=HOST)
    assert began[0]["seen_after_s"] <= 2
    ended = emitted(logs, "spike_ended", host=HOST)
    assert 0 < ended[0]["seen_after_s"] <= 5
    assert len(emitted(logs, "gap_sweep_started", host=HOST)) == 1
    assert sent == [HOST]
    assert states[0] is False
    assert True in states
    assert states[-1] is False
    # Calm before the spike, the short span through it and until its end is seen.
    assert script.spans[0] == follower.CALM_QUIET
    assert follower.QUIET in script.spans[1:]


def test_no_removal_is_started_when_none_was_put_off(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    sent: list[str] = []
    script = Script([*burst(20, 5.0), None, None, None, None, None])
    with capture_logs() as logs:
        make_follower(monkeypatch, script, client, sent).run(script.stop)
    emitted(logs, "spike_ended", host=HOST)
    assert sent == []


def quickly_retrying_follower(
    monkeypatch: pytest.MonkeyPatch,
    follow: Callable[..., Iterator[datetime | None]],
    client: redis.Redis[bytes],
) -> follower.HostFollower:
    monkeypatch.setattr(follower, "follow_starts", follow)
    monkeypatch.setattr(follower, "DockerHost", lambda config, **_: FakeHost(name=config.name))
    monkeypatch.setattr(follower, "BACKOFF_FIRST", timedelta(milliseconds=10))
    return follower.HostFollower(
        HostConfig(HOST, "unix:///nowhere.sock"),
        spike_rate=60,
        docker_timeout=timedelta(seconds=1),
        client=client,
        start_gap_sweep=lambda host: None,
    )


def test_a_lost_stream_clears_the_state_and_is_followed_again_after_a_backoff(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    stop = threading.Event()
    opened: list[int] = []

    def lost(docker: Any, *, quiet: Callable[[], timedelta]) -> Iterator[datetime | None]:
        opened.append(1)
        if len(opened) == 1:
            for n in range(8):  # a spike, then the daemon goes away
                yield NOW + timedelta(seconds=n / 4)
        if len(opened) == 2:
            stop.set()
        raise HostUnreachableError("alpha (unix:///nowhere.sock) ended its event stream")

    one = quickly_retrying_follower(monkeypatch, lost, client)
    with capture_logs() as logs:
        one.run(stop)
    lines = emitted(logs, "spike_stream_lost", host=HOST)
    assert lines[0]["log_level"] == "warning"
    assert lines[0]["retry_in_s"] == 0.01
    assert len(opened) == 2, "it followed the host again after the backoff"
    assert client.get(keys.spike(HOST)) is None, "a lost stream says nothing: no spike"


def test_a_fault_that_is_not_the_daemon_is_logged_and_the_host_followed_again(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    stop = threading.Event()
    opened: list[int] = []

    def broken(docker: Any, *, quiet: Callable[[], timedelta]) -> Iterator[datetime | None]:
        opened.append(1)
        if len(opened) == 2:
            stop.set()
        yield NOW
        raise KeyError("timeNano")

    one = quickly_retrying_follower(monkeypatch, broken, client)
    with capture_logs() as logs:
        one.run(stop)
    failed = emitted(logs, "spike_follower_failed", host=HOST)
    assert failed[0]["log_level"] == "error"
    assert "KeyError" in failed[0]["error"]
    assert failed[0]["exc_info"] is True
    [lost] = emitted(logs, "spike_stream_lost", host=HOST)
    assert lost["error"] == failed[0]["error"]
    assert len(opened) == 2, "the thread lived on and followed the host again"


def test_a_redis_that_fails_is_said_once_and_the_following_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2
    )
    script = Script([*burst(12, 4.0), None, None, None, None])
    with capture_logs() as logs:
        make_follower(monkeypatch, script, client, []).run(script.stop)
    assert len(emitted(logs, "spike_state_unpublished", host=HOST)) == 2, "once, then at the end"
    emitted(logs, "spike_ended", host=HOST)


def test_the_state_record_reads_back() -> None:
    view = SpikeView(True, 80.0, NOW, NOW - timedelta(seconds=1))

    class Memory:
        value: bytes | None = None

        def set(self, key: str, value: str, px: int) -> None:
            self.value = value.encode()

        def get(self, key: str) -> bytes | None:
            return self.value

    memory = Memory()
    follower.publish(memory, HOST, view)  # type: ignore[arg-type]
    assert follower.read_state(memory, HOST) == view  # type: ignore[arg-type]
