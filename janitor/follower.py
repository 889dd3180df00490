"""The spike follower: one thread per host in the worker's main process, following the daemon's
container starts live and publishing in Redis whether a spawn spike is on, so that pacing and
a removal sweep in flight read one fresh answer (see `pacing`).

It decides nothing about containers and acts on none. When a spike it saw ends and a removal
of that host was put off for it, it starts that removal at once, once across the workers.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
import structlog

from janitor import keys, metrics
from janitor.dockerhost import DockerHost
from janitor.dockerhost.events import follow_starts
from janitor.errors import HostError
from janitor.locks import REDIS_ERRORS, claim_once
from janitor.model import HostConfig
from janitor.spikes import SpikeDetector, SpikeView
from janitor.vocabulary import milliseconds

log = structlog.get_logger(__name__)

# How long the stream may stay silent before the follower looks at its clock again. During a
# spike, QUIET: its end is seen at most this much after the detector's window empties. While
# calm, CALM_QUIET: time alone never begins a spike (a start does, and the stream brings it at
# once), so the clock matters less; each quiet span ends in a reopened stream, about 3 ms of
# CPU each here, and a calm host would pay that every second.
QUIET = timedelta(seconds=1)
CALM_QUIET = timedelta(seconds=10)
# While the state stays the same it is written at most this often, and it lives this long:
# a follower that died or lost its stream stops refreshing it, and "no record" is "no spike".
# A calm record outlives the calm quiet span; a spike's goes within seconds of its follower.
PUBLISH_EVERY = timedelta(seconds=0.5)
STATE_TTL = timedelta(seconds=3)
CALM_STATE_TTL = CALM_QUIET + STATE_TTL
BACKOFF_FIRST = timedelta(seconds=1)
BACKOFF_MAX = timedelta(seconds=30)
# One removal in the gap per host, whichever worker saw the spike end first.
GAP_SWEEP_HOLD = timedelta(seconds=10)
DEFERRED_SINCE = "deferred-since"


def publish(client: redis.Redis[bytes], host: str, view: SpikeView) -> None:
    record = {
        "spiking": view.spiking,
        "rate_per_min": round(view.rate_per_min, 1),
        "since": view.since.isoformat() if view.since else None,
        "began_at": view.began_at.isoformat() if view.began_at else None,
    }
    ttl = STATE_TTL if view.spiking else CALM_STATE_TTL
    client.set(keys.spike(host), json.dumps(record), px=milliseconds(ttl))


def read_state(client: redis.Redis[bytes], host: str) -> SpikeView | None:
    """What a live follower last published for the host; None when none did lately."""
    raw = client.get(keys.spike(host))
    if raw is None:
        return None
    record = json.loads(raw)
    since, began_at = record.get("since"), record.get("began_at")
    return SpikeView(
        spiking=bool(record.get("spiking")),
        rate_per_min=float(record.get("rate_per_min", 0.0)),
        since=datetime.fromisoformat(since) if since else None,
        began_at=datetime.fromisoformat(began_at) if began_at else None,
    )


@dataclass
class _DaemonClock:
    """The daemon's clock between readings: the last reading plus the time since, never
    behind the latest start the daemon announced."""

    read_at: datetime
    monotonic: Callable[[], float]

    def __post_init__(self) -> None:
        self.monotonic_at = self.monotonic()

    def now(self) -> datetime:
        return self.read_at + timedelta(seconds=self.monotonic() - self.monotonic_at)

    def catch_up(self, announced: datetime) -> None:
        if announced > self.now():
            self.read_at, self.monotonic_at = announced, self.monotonic()


class HostFollower:
    """Follows one host: stream, detector, published state, and the removal in the gap."""

    def __init__(
        self,
        host: HostConfig,
        *,
        spike_rate: int,
        docker_timeout: timedelta,
        client: redis.Redis[bytes],
        start_gap_sweep: Callable[[str], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.detector = SpikeDetector(spike_rate)
        self.docker_timeout = docker_timeout
        self.client = client
        self.start_gap_sweep = start_gap_sweep
        self.stop = threading.Event()
        self.monotonic = monotonic
        self.log = log.bind(host=host.name)
        self._published: SpikeView | None = None
        self._published_at = 0.0
        self._last_start: datetime | None = None
        self._redis_failing = False

    def run(self, stop: threading.Event) -> None:
        self.stop = stop
        backoff = BACKOFF_FIRST
        while not self.stop.is_set():
            try:
                with DockerHost(self.host, timeout=self.docker_timeout, max_pool_size=1) as docker:
                    self._follow(docker)
            except Exception as exc:
                error = str(exc)
                if not isinstance(exc, HostError):
                    # Not the daemon but a fault of ours or of a library: the thread outlives
                    # it, or the host's pacing would end for good without a word.
                    error = repr(exc)
                    self.log.exception("spike_follower_failed", error=error)
                self._lost(error, backoff)
                if self.stop.wait(backoff.total_seconds()):
                    break
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST

    def _follow(self, docker: DockerHost) -> None:
        clock = _DaemonClock(docker.info().now, self.monotonic)
        for started_at in follow_starts(docker, quiet=self._quiet):
            if self.stop.is_set():
                return
            if started_at is not None:
                clock.catch_up(started_at)
                self.detector.add(started_at)
                self._last_start = max(started_at, self._last_start or started_at)
            now = clock.now()
            self._observe(self.detector.view(now), now)

    def _quiet(self) -> timedelta:
        return QUIET if self._published is not None and self._published.spiking else CALM_QUIET

    def _observe(self, view: SpikeView, now: datetime) -> None:
        was = self._published
        fresh = self.monotonic() - self._published_at < PUBLISH_EVERY.total_seconds()
        if was is not None and was.spiking == view.spiking and fresh:
            return
        if view.spiking and not (was and was.spiking):
            seen_after = (view.since - view.began_at) if view.since and view.began_at else None
            self.log.info(
                "spike_began",
                rate_per_min=round(view.rate_per_min, 1),
                began_at=_iso(view.began_at),
                seen_at=_iso(view.since),
                seen_after_s=round(seen_after.total_seconds(), 3) if seen_after else None,
            )
        self._publish(view)
        if was is not None and was.spiking and not view.spiking:
            self._ended(was, now)

    def _ended(self, spike: SpikeView, now: datetime) -> None:
        quiet_for = now - self._last_start if self._last_start else None
        self.log.info(
            "spike_ended",
            began_at=_iso(spike.began_at),
            last_start_at=_iso(self._last_start),
            seen_at=_iso(now),
            seen_after_s=round(quiet_for.total_seconds(), 3) if quiet_for else None,
        )
        try:
            deferred = bool(self.client.exists(keys.pacing(DEFERRED_SINCE, self.host.name)))
            claimed = deferred and claim_once(
                self.client, keys.pacing("gap-sweep", self.host.name), GAP_SWEEP_HOLD
            )
        except REDIS_ERRORS as exc:
            # The deferred sweep's own recheck still comes, a few seconds later.
            self.log.warning("spike_state_unpublished", error=str(exc))
            return
        if claimed:
            self.log.info("gap_sweep_started")
            self.start_gap_sweep(self.host.name)

    def _publish(self, view: SpikeView) -> None:
        self._published, self._published_at = view, self.monotonic()
        metrics.SPAWN_RATE.labels(host=self.host.name).set(view.rate_per_min)
        try:
            publish(self.client, self.host.name, view)
        except REDIS_ERRORS as exc:
            if not self._redis_failing:
                self.log.warning("spike_state_unpublished", error=str(exc))
            self._redis_failing = True
            return
        self._redis_failing = False

    def _lost(self, error: str, retry_in: timedelta) -> None:
        """The stream is gone: what it said no longer holds, so no spike is published."""
        self.log.warning("spike_stream_lost", error=error, retry_in_s=retry_in.total_seconds())
        self.detector.reset()
        self._published = None
        metrics.SPAWN_RATE.labels(host=self.host.name).set(0)
        with contextlib.suppress(*REDIS_ERRORS):  # else it expires within STATE_TTL
            self.client.delete(keys.spike(self.host.name))


class Follower:
    """The followers of every host of a worker, started and stopped together."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, followers: Sequence[HostFollower]) -> None:
        for follower in followers:
            thread = threading.Thread(
                target=follower.run,
                args=(self._stop,),
                daemon=True,
                name=f"spike-follower-{follower.host.name}",
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            # A thread notices within one quiet span (a calm one is long: a worker's shutdown
            # does not wait for it); one stuck in a call ends with the process.
            thread.join(timeout=2 * QUIET.total_seconds())


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat() if instant else None
