"""When the stopped-container sweep runs: put off during spawn spikes, hurried and tightened
under memory or CPU pressure. It sits between the task and the sweep and changes only the
settings a sweep runs with, never which containers the policy picks by its rules.

The decisions are pure functions of readings; `plan_removal` and `check_pressure` take the
readings (daemon events, /proc) and keep their state in Redis, so every worker process and
every tick of a host sees the same deferral and the same pressure episode.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
import structlog

from janitor import keys, metrics, pressure
from janitor.errors import HostError
from janitor.settings import Settings
from janitor.tick import Tick

log = structlog.get_logger(__name__)

SPAWN_WINDOW = timedelta(seconds=60)
# A short burst is measured over at least this span, not as an instantaneous rate.
MIN_RATE_SPAN = timedelta(seconds=10)
# While deferred, the rate is checked again this often, so the sweep runs soon after a spike.
RECHECK = timedelta(seconds=10)


class Pace(enum.Enum):
    RUN = "run"
    DEFER = "defer"
    FORCE = "force"  # deferred too long: run anyway, one action in flight


def spawn_rate(starts: list[datetime], now: datetime) -> float:
    """Container starts per minute over what the daemon's event buffer returned.

    The buffer may hold less than the window under churn; measuring over the span the
    returned events cover keeps a truncated spike a spike instead of diluting it.
    """
    if not starts:
        return 0.0
    span = max(now - min(starts), MIN_RATE_SPAN)
    return len(starts) * 60 / min(span, SPAWN_WINDOW).total_seconds()


def pace(rate: float, threshold: int, deferred_for: timedelta | None, max_defer: timedelta) -> Pace:
    if threshold <= 0 or rate <= threshold:
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
        rate, now = _measure_rate(tick)
    except HostError:
        return RemovalPlan(Pace.RUN, effective, notes)  # the sweep reports the host as failed
    notes["spawn_rate_per_min"] = round(rate, 1)
    metrics.SPAWN_RATE.labels(host=host_name).set(rate)
    since_key = keys.pacing("deferred-since", host_name)
    raw = client.get(since_key)
    deferred_since = datetime.fromisoformat(raw.decode()) if raw else None
    deferred_for = now - deferred_since if deferred_since else None
    decision = pace(rate, settings.spike_rate, deferred_for, settings.max_defer)
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
    client.delete(since_key)
    metrics.DEFERRED.labels(host=host_name).set(0)
    if decision is Pace.FORCE:
        # Cleaning must not wait forever on a host that is always busy, but during the spike
        # it competes with it for the daemon as little as it can.
        bound.warning(
            "sweep_forced", spawn_rate_per_min=round(rate, 1), deferred_s=notes["deferred_s"]
        )
        effective = effective.model_copy(update={"concurrency": 1})
        notes["forced"] = True
    return RemovalPlan(decision, effective, notes)


def _measure_rate(tick: Tick) -> tuple[float, datetime]:
    """The host's spawn rate per minute and the daemon's clock it was measured at."""
    now = tick.daemon_info().now
    return spawn_rate(tick.docker.starts_between(now - SPAWN_WINDOW, now), now), now


def claim_recheck(client: redis.Redis[bytes], host_name: str) -> bool:
    """True for the one caller that should schedule the next rate check of a deferral."""
    return bool(client.set(keys.pacing("recheck", host_name), "1", nx=True, px=_ms(RECHECK)))


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
    return bool(client.set(keys.pacing(what, host_name), "1", nx=True, px=_ms(hold)))


def _ms(duration: timedelta) -> int:
    return max(1, int(duration.total_seconds() * 1000))
