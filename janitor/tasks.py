"""Thin Celery tasks: settings + host name -> one tick (pacing, sweep) -> the contract's result."""

from __future__ import annotations

import functools
import time

import redis
import structlog

from janitor import fleet, metrics, pacing
from janitor.celery_app import app
from janitor.errors import HostError
from janitor.locks import REDIS_ERRORS
from janitor.model import Status, SweepNotRun, SweepReport, Task
from janitor.redisconn import redis_client
from janitor.schedule import time_limits
from janitor.settings import cached_settings
from janitor.tick import Tick, open_tick, sweep

log = structlog.get_logger(__name__)

# `done` actions kept in a stored task result; a host's bigger sweeps count the rest.
STORED_DONE_ACTIONS = 100


@functools.cache
def _redis() -> redis.Redis[bytes]:
    # Made on first use, so each prefork child opens its own connections after the fork.
    settings = cached_settings()
    return redis_client(
        settings, timeout=settings.docker_timeout.total_seconds(), health_check_interval=30
    )


def _sweep(
    tick: Tick, notes: dict[str, object] | None = None, gate: pacing.SpikeGate | None = None
) -> dict[str, object]:
    deadline = time.monotonic() + time_limits(tick.settings, tick.task).cutoff.total_seconds()
    outcome = sweep(tick, deadline=deadline, yield_to=gate)
    if not isinstance(outcome, SweepReport):
        metrics.record_skipped(outcome.host, outcome.task.value)
        return outcome.to_dict()
    metrics.record(outcome)
    # The stored result is bounded: every action that was not simply done stays, with its
    # detail; `janitor sweep --json` is the place for the whole list.
    result = {**outcome.to_dict(max_done=STORED_DONE_ACTIONS), **(notes or {})}
    if not outcome.dry_run:
        try:
            fleet.record_report(
                _redis(), result, ok=outcome.status is Status.OK, ttl=tick.settings.result_ttl
            )
        except REDIS_ERRORS as exc:
            log.warning("last_report_unrecorded", host=outcome.host, error=str(exc))
    return result


@app.task(name="janitor.kill_ghosts")
def kill_ghosts(host: str) -> dict[str, object]:
    """Kill the ghosts of one configured host: running containers past their budget."""
    # An unknown host name is rejected (UnknownHostError) before anything is touched.
    with open_tick(cached_settings(), host, Task.KILL_GHOSTS, _redis()) as tick:
        result = _sweep(tick)
        # Ghost ticks are the frequent ones: they also watch the host's pressure and start
        # the stopped sweep early when it rises, instead of waiting for the remove interval.
        try:
            under = pacing.check_pressure(tick, _redis())
            interval = tick.settings.kill_interval
            if under and pacing.claim_pressure_sweep(_redis(), host, interval):
                log.info("pressure_sweep_started", host=host)
                remove_stopped.apply_async(args=(host,), expires=interval.total_seconds())
            # A full disk is what unused images and volumes fill: prune early too, when the
            # operator turned pruning on. Early only: the grace stays what it is.
            if (
                under
                and tick.settings.prunes
                and pacing.claim_pressure_sweep(_redis(), host, interval, "pressure-prune")
            ):
                log.info("pressure_prune_started", host=host)
                prune_unused.apply_async(args=(host,), expires=interval.total_seconds())
        except REDIS_ERRORS as exc:
            log.warning("pressure_unchecked", host=host, error=str(exc))
    return result


@app.task(name="janitor.remove_stopped")
def remove_stopped(host: str) -> dict[str, object]:
    """Remove the stopped containers of one configured host that are past their grace,
    unless a spawn spike defers it (then it checks again shortly, up to JANITOR_MAX_DEFER)."""
    with open_tick(cached_settings(), host, Task.REMOVE_STOPPED, _redis()) as tick:
        try:
            plan = pacing.plan_removal(tick, _redis())
        except REDIS_ERRORS as exc:
            # Pacing is an optimisation; the sweep itself reports Redis trouble as a failure.
            log.warning("pacing_unchecked", host=host, error=str(exc))
            return _sweep(tick)
        if plan.pace is pacing.Pace.DEFER:
            _recheck_later(host)
            deferred = SweepNotRun(Task.REMOVE_STOPPED, host, Status.DEFERRED, notes=plan.notes)
            return deferred.to_dict()
        # A forced sweep has waited long enough: it goes on through the spike, one at a time;
        # so does one that starts in a gap after a deferral of JANITOR_MAX_DEFER.
        may_yield = plan.pace is pacing.Pace.RUN and plan.may_yield
        gate = _spike_gate(tick) if may_yield else None
        result = _sweep(tick.with_settings(plan.settings), plan.notes, gate)
        if gate is not None and gate.yielded:
            _recheck_later(host)  # in case no follower sees the spike end
        elif tick.settings.spike_rate > 0 and result.get("status") == Status.OK.value:
            try:
                pacing.end_deferral(_redis(), host)
            except REDIS_ERRORS as exc:
                log.warning("pacing_unchecked", host=host, error=str(exc))
        return result


def _spike_gate(tick: Tick) -> pacing.SpikeGate | None:
    if tick.settings.spike_rate <= 0:
        return None
    try:
        now = tick.daemon_info().now
    except HostError:
        return None  # the sweep reports the host as failed
    return pacing.SpikeGate(_redis(), tick.host.name, now)


def _recheck_later(host: str) -> None:
    """One spike check of a deferred host RECHECK from now, whoever asks first."""
    try:
        claimed = pacing.claim_recheck(_redis(), host)
    except REDIS_ERRORS as exc:
        log.warning("pacing_unchecked", host=host, error=str(exc))
        return
    if claimed:
        recheck = pacing.RECHECK.total_seconds()
        remove_stopped.apply_async(args=(host,), countdown=recheck, expires=recheck * 3)


@app.task(name="janitor.prune_unused")
def prune_unused(host: str) -> dict[str, object]:
    """Remove the in-scope images, volumes and networks of one configured host that no
    container refers to, past JANITOR_UNUSED_GRACE or over JANITOR_IMAGE_DISK_BUDGET."""
    with open_tick(cached_settings(), host, Task.PRUNE_UNUSED, _redis()) as tick:
        return _sweep(tick)
