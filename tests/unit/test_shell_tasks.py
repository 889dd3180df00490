"""The Celery tasks' own steps (pacing, pressure, the result they return) against a fake host.

The task functions run in this process, as a worker's pool process runs them, with the fake
Docker host in place of the adapter and a real private Redis; nothing is sent to a broker:
the follow-up ticks a task would queue are recorded instead.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs
from support.fakehost import NOW, FakeHost, container, emitted, settings_for

from janitor import follower, keys, pacing, pressure, tasks, tick
from janitor.errors import UnknownHostError
from janitor.model import State, Status
from janitor.spikes import SpikeView
from janitor.sweep import ReportHeader

CLOSED_REDIS = "redis://127.0.0.1:1/0"


class Harness:
    """One fake host, the settings the tasks read, and the ticks they queued."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, proc: Path) -> None:
        self.monkeypatch = monkeypatch
        self.proc = proc
        self.fake = FakeHost([container("old-exit"), container("ghost", State.RUNNING)])
        self.queued: list[dict[str, Any]] = []
        monkeypatch.setattr(tick, "DockerHost", lambda config, **_: self.fake)
        monkeypatch.setattr(
            tasks.remove_stopped, "apply_async", lambda **kw: self.queued.append(kw)
        )
        self.load(memory_used=0.1)

    def configure(self, redis_url: str, **overrides: Any) -> None:
        settings = settings_for(self.fake, proc_root=str(self.proc), **overrides)
        client: redis.Redis[bytes] = redis.Redis.from_url(
            redis_url, socket_connect_timeout=0.5, socket_timeout=0.5
        )
        self.monkeypatch.setattr(tasks, "cached_settings", lambda: settings)
        self.monkeypatch.setattr(tasks, "_redis", lambda: client)

    def load(self, *, memory_used: float) -> None:
        """A /proc of a host with that share of memory in use and an idle CPU."""
        available = int(1_000_000 * (1 - memory_used))
        (self.proc / "meminfo").write_text(f"MemTotal: 1000000 kB\nMemAvailable: {available} kB\n")
        (self.proc / "stat").write_text("cpu  100 0 100 10000 0 0 0 0\n")


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Harness:
    return Harness(monkeypatch, tmp_path)


def test_an_unknown_host_is_rejected_before_anything_is_touched(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url)
    with pytest.raises(UnknownHostError, match="unknown host 'omega'"):
        tasks.kill_ghosts("omega")
    assert sum(harness.fake.calls.values()) == 0


def test_a_tick_opens_one_client_and_reads_the_clock_once(harness: Harness, redis_url: str) -> None:
    harness.configure(redis_url, spike_rate=100, pressure_high=0.8)
    result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    assert result["spawn_rate_per_min"] == 0
    assert harness.fake.calls["info"] == 1, "pacing and the sweep share one clock reading"


def test_pressure_starts_an_early_stopped_sweep_and_relief_is_logged(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, pressure_high=0.8, pressure_low=0.7)
    harness.load(memory_used=0.9)
    with capture_logs() as logs:
        tasks.kill_ghosts("alpha")
        tasks.kill_ghosts("alpha")  # the same episode: no second early sweep
    assert emitted(logs, "pressure_high", memory=0.9)[0]["log_level"] == "warning"
    assert len(emitted(logs, "pressure_sweep_started", host="alpha")) == 1
    assert [q["args"] for q in harness.queued] == [("alpha",)]
    harness.load(memory_used=0.5)
    with capture_logs() as logs:
        tasks.kill_ghosts("alpha")
    emitted(logs, "pressure_relieved", memory=0.5)


def test_an_unreadable_proc_leaves_the_sweep_unpaced(harness: Harness, redis_url: str) -> None:
    harness.configure(redis_url, pressure_high=0.8)
    (harness.proc / "stat").unlink()
    with capture_logs() as logs:
        result = tasks.kill_ghosts("alpha")
    assert result["status"] == "ok"
    emitted(logs, "pressure_unreadable", host="alpha")


def test_redis_down_fails_the_sweep_and_leaves_pacing_and_pressure_unchecked(
    harness: Harness,
) -> None:
    harness.configure(CLOSED_REDIS, pressure_high=0.8, spike_rate=100)
    with capture_logs() as logs:
        killed = tasks.kill_ghosts("alpha")
        removed = tasks.remove_stopped("alpha")
    assert killed["status"] == removed["status"] == "failed"
    emitted(logs, "pressure_unchecked", host="alpha")
    emitted(logs, "pacing_unchecked", host="alpha")
    assert len(emitted(logs, "sweep_failed")) == 2
    assert harness.fake.calls["stop"] == harness.fake.calls["remove"] == 0


def spike_on(redis_url: str, host: str = "alpha") -> redis.Redis[bytes]:
    """A follower's record of a spike at the host, as a live one publishes it."""
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    follower.publish(client, host, SpikeView(True, 240.0, NOW, NOW - timedelta(seconds=1)))
    return client


def test_a_spike_defers_the_stopped_sweep_and_queues_one_recheck(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, spike_rate=60)
    spike_on(redis_url)
    with capture_logs() as logs:
        first = tasks.remove_stopped("alpha")
        second = tasks.remove_stopped("alpha")
    assert first["status"] == second["status"] == "deferred"
    assert first["spawn_rate_per_min"] == 240.0
    emitted(logs, "sweep_deferred", threshold=60)
    assert [q["countdown"] for q in harness.queued] == [10.0], "one recheck per deferral step"
    assert harness.fake.calls["remove"] == 0
    assert harness.fake.calls["events"] == 0, "the follower reads the events, not the tick"


def test_no_follower_record_is_no_spike(harness: Harness, redis_url: str) -> None:
    harness.configure(redis_url, spike_rate=60)
    client = spike_on(redis_url)
    client.delete(keys.spike("alpha"))  # the follower died: its record expired
    result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    assert result["counts"] == {"done": 1}


def test_a_spike_that_begins_mid_sweep_makes_the_sweep_yield_and_queue_a_recheck(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, spike_rate=60, concurrency=1)
    harness.monkeypatch.setattr(pacing, "YIELD_CHECK_EVERY", timedelta(0))
    exited = [container(f"exit-{n}") for n in range(5)]
    harness.fake.containers = {c.id: c for c in exited}

    def spike_begins() -> None:
        spike_on(redis_url)

    # Right before the second removal's re-check: that one goes ahead, the next yields.
    harness.fake.meddlers[exited[1].id] = spike_begins
    with capture_logs() as logs:
        result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    assert result["counts"] == {"done": 2, "refused": 3}
    details = {a["detail"] for a in result["actions"] if a["outcome"] == "refused"}
    assert details == {"yielded_to_spike"}
    emitted(logs, "sweep_yielded", yielded=3)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    assert client.get(keys.pacing("deferred-since", "alpha")) == NOW.isoformat().encode()
    assert [q["countdown"] for q in harness.queued] == [10.0], "in case no follower sees its end"


def test_a_spike_longer_than_max_defer_forces_the_sweep_one_at_a_time(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, spike_rate=60, max_defer="10m")
    client = spike_on(redis_url)
    client.set(keys.pacing("deferred-since", "alpha"), (NOW - timedelta(minutes=11)).isoformat())
    with capture_logs() as logs:
        result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    assert result["forced"] is True
    assert result["counts"] == {"done": 1}, "a forced sweep does not yield"
    emitted(logs, "sweep_forced", deferred_s=660.0)


def test_a_sweep_in_a_gap_after_max_defer_goes_on_through_the_next_spike(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, spike_rate=60, concurrency=1, max_defer="10m")
    harness.monkeypatch.setattr(pacing, "YIELD_CHECK_EVERY", timedelta(0))
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    client.set(keys.pacing("deferred-since", "alpha"), (NOW - timedelta(minutes=11)).isoformat())
    exited = [container(f"exit-{n}") for n in range(3)]
    harness.fake.containers = {c.id: c for c in exited}
    # Planned in the gap (no spike on), the next spike begins before the second removal.
    harness.fake.meddlers[exited[1].id] = lambda: spike_on(redis_url)
    result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    assert result["counts"] == {"done": 3}, "past JANITOR_MAX_DEFER a sweep does not yield"
    assert client.get(keys.pacing("deferred-since", "alpha")) is None, "it ran through"


def test_a_sweep_skipped_for_a_held_lease_leaves_the_deferral_as_it_was(
    harness: Harness, redis_url: str
) -> None:
    harness.configure(redis_url, spike_rate=60)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    since = (NOW - timedelta(minutes=3)).isoformat()
    client.set(keys.pacing("deferred-since", "alpha"), since)
    client.set(keys.sweep_lease("alpha", "remove-stopped"), "another sweep")
    result = tasks.remove_stopped("alpha")
    assert result["status"] == "skipped"
    assert client.get(keys.pacing("deferred-since", "alpha")) == since.encode()


def test_the_spike_gate_reads_redis_at_most_every_half_second(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    clock = [0.0]
    gate = pacing.SpikeGate(client, "alpha", NOW, monotonic=lambda: clock[0])
    assert gate() is False
    spike_on(redis_url)
    clock[0] = 0.4
    assert gate() is False, "the answer of 0.4 s ago"
    clock[0] = 0.5
    assert gate() is True
    assert gate.yielded
    broken = pacing.SpikeGate(redis.Redis.from_url(CLOSED_REDIS), "alpha", NOW)
    with capture_logs() as logs:
        assert broken() is False, "Redis failing is no spike"
    emitted(logs, "pacing_unchecked", host="alpha")


@pytest.mark.parametrize("prune_interval", ["0", "10m"])
def test_a_filling_docker_root_starts_the_stopped_sweep_and_an_enabled_prune_early(
    harness: Harness, redis_url: str, tmp_path: Path, prune_interval: str
) -> None:
    root = tmp_path / "docker-root"
    root.mkdir()
    harness.configure(
        redis_url, pressure_high=0.8, docker_root=str(root), prune_interval=prune_interval
    )
    prunes: list[dict[str, Any]] = []
    harness.monkeypatch.setattr(tasks.prune_unused, "apply_async", lambda **kw: prunes.append(kw))
    full = pressure.DiskReading(blocks=0.5, inodes=0.95, capacity=10**9)
    harness.monkeypatch.setattr(pressure, "read_disk", lambda path: full if path == root else None)
    with capture_logs() as logs:
        tasks.kill_ghosts("alpha")
    emitted(logs, "pressure_high", disk_inodes=0.95, memory=0.1)
    emitted(logs, "pressure_sweep_started", host="alpha")
    if prune_interval == "0":
        assert prunes == [], "pruning is opt-in, pressure or not"
        assert not [e for e in logs if e["event"] == "pressure_prune_started"]
    else:
        emitted(logs, "pressure_prune_started", host="alpha")
        assert [p["args"] for p in prunes] == [("alpha",)]


def test_the_prune_task_returns_its_report(harness: Harness, redis_url: str) -> None:
    harness.configure(redis_url)
    harness.monkeypatch.setattr(
        tick,
        "sweep_unused",
        lambda resources, rules, options, lease, now, **_: ReportHeader(
            options.task, resources.name, options.dry_run
        ).report(Status.OK, now),
    )
    result = tasks.prune_unused("alpha")
    assert (result["task"], result["status"]) == ("prune-unused", "ok")
