"""When the stopped-container sweep runs: put off during spawn spikes, hurried and tightened
under memory or CPU pressure. It sits between the task and the sweep and changes only the
settings a sweep runs with, never which containers the policy picks by its rules.

The decisions are pure functions of readings; `plan_removal` and `check_pressure` take the
readings (the spike state the followers publish, /proc) and keep their state in Redis, so every
worker process and every tick of a host sees the same deferral and the same pressure episode.
A removal sweep that is already acting when a spike begins yields to it (`SpikeGate`).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
import structlog

from janitor import follower, keys, metrics, pressure
from janitor.errors import HostError
from janitor.locks import REDIS_ERRORS, claim_once
from janitor.settings import Settings
from janitor.tick import Tick

log = structlog.get_logger(__name__)

# While deferred, the spike is checked again this often, so the sweep runs soon after it even
# when no follower says it ended.
RECHECK = timedelta(seconds=10)
# How stale the spike state a removal sweep in flight acts on may be: one Redis read per this.
YIELD_CHECK_EVERY = timedelta(seconds=0.5)


class Pace(enum.Enum):
    RUN = "run"
    DEFER = "defer"
    FORCE = "force"  # deferred too long: run anyway, one action in flight


def pace(spiking: bool, deferred_for: timedelta | None, max_defer: timedelta) -> Pace:
    if not spiking:
        return Pace.RUN
    if deferred_for is not None and deferred_for >= max_defer:
        return Pace.FORCE
    return Pace.DEFER


def is_under_pressure(peak: float, was_under: bool, high: float, low: float) -> bool:
    """Hysteresis: in above `high`, out only under `low`."""
    if high <= 0:
        return False
    return peak >= low if was_under else peak >= high


def tightened(settings: Settings) -> Settings:
    """The settings of a sweep under pressure: graces shrunk to the floor, never lengthened."""
    floor = settings.pressure_grace_floor
    if floor <= timedelta(0):
        return settings
    return settings.model_copy(
        update={
            "stopped_grace": min(settings.stopped_grace, floor),
            "created_grace": min(settings.created_grace, floor),
        }
    )


@dataclass(frozen=True, slots=True)
class RemovalPlan:
    pace: Pace
    settings: Settings
    # Added to the task's report: why this sweep ran when and how it did.
    notes: dict[str, object] = field(default_factory=dict)
    # False once the host's deferral has lasted JANITOR_MAX_DEFER: a sweep started in a gap
    # then goes on through the next spike, or yielding could put cleaning off for ever.
    may_yield: bool = True


def plan_removal(tick: Tick, client: redis.Redis[bytes]) -> RemovalPlan:
    """Whether the stopped sweep of a host runs now, and with which settings.

    Spawn times and the deferral's start are both on the daemon's clock.
    """
    settings, host_name = tick.settings, tick.host.name
    bound = tick.log
    notes: dict[str, object] = {}
    effective = settings
    if check_pressure(tick, client):
        effective = tightened(settings)
        # Said in the report only when it changed the sweep: by default reports keep the
        # contract's exact fields.
        if effective is not settings:
            notes["under_pressure"] = True
    if settings.spike_rate <= 0:
        return RemovalPlan(Pace.RUN, effective, notes)
    try:
        now = tick.daemon_info().now
    except HostError:
        return RemovalPlan(Pace.RUN, effective, notes)  # the sweep reports the host as failed
    # No record: no follower saw this host lately, and nothing unseen defers cleaning.
    state = follower.read_state(client, host_name)
    rate = state.rate_per_min if state else 0.0
    notes["spawn_rate_per_min"] = round(rate, 1)
    since_key = keys.pacing(follower.DEFERRED_SINCE, host_name)
    raw = client.get(since_key)
    deferred_since = datetime.fromisoformat(raw.decode()) if raw else None
    deferred_for = now - deferred_since if deferred_since else None
    decision = pace(state is not None and state.spiking, deferred_for, settings.max_defer)
    if deferred_for is not None:
        notes["deferred_s"] = round(deferred_for.total_seconds(), 1)
    if decision is Pace.DEFER:
        if deferred_since is None:
            client.set(since_key, now.isoformat(), nx=True)
        metrics.DEFERRED.labels(host=host_name).set(1)
        metrics.DEFERRALS.labels(host=host_name).inc()
        bound.info(
            "sweep_deferred",
            spawn_rate_per_min=round(rate, 1),
            threshold=settings.spike_rate,
            deferred_s=notes.get("deferred_s", 0),
        )
        return RemovalPlan(decision, effective, notes)
    metrics.DEFERRED.labels(host=host_name).set(0)
    may_yield = deferred_for is None or deferred_for < settings.max_defer
    if decision is Pace.FORCE:
        client.delete(since_key)
        # Cleaning must not wait forever on a host that is always busy, but during the spike
        # it competes with it for the daemon as little as it can.
        bound.warning(
            "sweep_forced", spawn_rate_per_min=round(rate, 1), deferred_s=notes["deferred_s"]
        )
        effective = effective.model_copy(update={"concurrency": 1})
        notes["forced"] = True
    return RemovalPlan(decision, effective, notes, may_yield=may_yield)


class SpikeGate:
    """A removal sweep's `yield_to`: True once a follower says a spike is on at the host.

    Read at most every YIELD_CHECK_EVERY (actions in flight share the answer); the first True
    records the deferral, so the follower starts the next sweep as soon as the spike ends and
    JANITOR_MAX_DEFER counts from here. Redis failing is no spike: the sweep goes on.
    """

    def __init__(
        self,
        client: redis.Redis[bytes],
        host_name: str,
        now: datetime,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.monotonic = monotonic
        self.host_name = host_name
        self.now = now
        self.yielded = False
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._spiking = False

    def __call__(self) -> bool:
        with self._lock:
            moment = self.monotonic()
            if (
                self._checked_at is None
                or moment - self._checked_at >= YIELD_CHECK_EVERY.total_seconds()
            ):
                self._checked_at = moment
                self._spiking = self._read()
            return self._spiking

    def _read(self) -> bool:
        try:
            state = follower.read_state(self.client, self.host_name)
            if state is None or not state.spiking:
                return False
            if not self.yielded:
                since_key = keys.pacing(follower.DEFERRED_SINCE, self.host_name)
                self.client.set(since_key, self.now.isoformat(), nx=True)
        except REDIS_ERRORS as exc:
            log.warning("pacing_unchecked", host=self.host_name, error=str(exc))
            return False
        self.yielded = True
        return True


def end_deferral(client: redis.Redis[bytes], host_name: str) -> None:
    """A sweep ran through (status ok) without yielding: the host's deferral, if any, is
    over; a sweep skipped for a held lease or failed ends nothing. Kept until then, so
    that a sweep that yields to a spike back after a dip keeps the deferral's first instant,
    and JANITOR_MAX_DEFER counts from it."""
    client.delete(keys.pacing(follower.DEFERRED_SINCE, host_name))


def claim_recheck(client: redis.Redis[bytes], host_name: str) -> bool:
    """True for the one caller that should schedule the next rate check of a deferral."""
    return claim_once(client, keys.pacing("recheck", host_name), RECHECK)


def check_pressure(tick: Tick, client: redis.Redis[bytes]) -> bool:
    """Read the host's pressure and keep its episode state; True while under pressure."""
    settings, host_name = tick.settings, tick.host.name
    if settings.pressure_high <= 0 or not pressure.can_read(tick.host):
        return False
    try:
        reading = pressure.read(settings.proc_root, root=tick.docker_root())
    except (OSError, ValueError, KeyError) as exc:
        log.warning("pressure_unreadable", host=host_name, error=str(exc))
        return False
    shares = {"memory": reading.memory, "cpu": reading.cpu}
    if reading.disk is not None:
        shares |= {"disk_blocks": reading.disk.blocks, "disk_inodes": reading.disk.inodes}
    for resource, share in shares.items():
        metrics.PRESSURE.labels(host=host_name, resource=resource).set(share)
    key = keys.pacing("pressure", host_name)
    was_under = bool(client.exists(key))
    under = is_under_pressure(
        reading.peak, was_under, settings.pressure_high, settings.pressure_low
    )
    fields = {"host": host_name, **{name: round(share, 3) for name, share in shares.items()}}
    if under and not was_under:
        client.set(key, "1")
        log.warning("pressure_high", high=settings.pressure_high, **fields)
    elif was_under and not under:
        client.delete(key)
        log.info("pressure_relieved", low=settings.pressure_low, **fields)
    metrics.UNDER_PRESSURE.labels(host=host_name).set(int(under))
    return under


def claim_pressure_sweep(
    client: redis.Redis[bytes], host_name: str, hold: timedelta, what: str = "pressure-sweep"
) -> bool:
    """True for the one caller that should start an early sweep (the stopped one, or `what`
    names another) in this episode tick."""
    return claim_once(client, keys.pacing(what, host_name), hold)
