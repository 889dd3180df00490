"""One tick of one (host, task), step by step: connect, clock, identity, rules, lease, sweep,
report, log. Shared by the CLI and the Celery tasks; it knows nothing of Celery.

A tick resolves its host once, opens one Docker client and reads the daemon's clock once;
pacing, which runs before the sweep of a stopped tick, reads the same clock through it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import redis
import structlog

from janitor import failover, firstseen, pressure
from janitor import lease as owner_leases
from janitor.dockerhost import DaemonInfo, DockerHost, own_container_ids
from janitor.dockerhost.resources import ResourceHost
from janitor.errors import ContainerError, HostError, LeaseHeldError
from janitor.kinds import DeadLeaseLookup, FirstSeenLookup, sweep_containers
from janitor.kinds_unused import sweep_unused
from janitor.locks import Lease, NoLease, RedisLease, check_daemon_identity
from janitor.model import (
    HostConfig,
    Rules,
    Status,
    SweepNotRun,
    SweepOutcome,
    SweepReport,
    Task,
)
from janitor.settings import Settings
from janitor.sweep import ReportHeader, SweepOptions
from janitor.unused import UnusedRules

log = structlog.get_logger(__name__)


class Tick:
    """What one tick works with: settings, the resolved host, one client, one clock reading."""

    def __init__(
        self,
        settings: Settings,
        host: HostConfig,
        task: Task,
        docker: DockerHost,
        redis_client: redis.Redis[bytes] | None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.task = task
        self.docker = docker
        self.redis = redis_client
        self.log = log.bind(host=host.name, task=task.value, dry_run=settings.dry_run)
        self._info: DaemonInfo | HostError | None = None

    def daemon_info(self) -> DaemonInfo:
        """The daemon's /info, read once per tick; an unreachable daemon is not asked twice."""
        if self._info is None:
            try:
                self._info = self.docker.info()
            except HostError as exc:
                self._info = exc
        if isinstance(self._info, HostError):
            raise self._info
        return self._info

    def docker_root(self) -> Path | None:
        """Where this worker sees the host's Docker root filesystem; None where it cannot."""
        try:
            daemon_root = self.daemon_info().docker_root
        except HostError:
            daemon_root = ""  # the sweep reports the host; this reading goes without it
        return pressure.docker_root(self.settings.docker_root, self.host, daemon_root)

    def with_settings(self, settings: Settings) -> Tick:
        """The same tick run with other settings (pacing tightens or slows a sweep)."""
        changed = Tick(settings, self.host, self.task, self.docker, self.redis)
        changed._info = self._info
        return changed


@contextmanager
def open_tick(
    settings: Settings, host_name: str, task: Task, redis_client: redis.Redis[bytes] | None
) -> Iterator[Tick]:
    """Raises UnknownHostError, before touching anything, for a host name not configured."""
    host = settings.host(host_name)
    pool_size = settings.concurrency + 2
    with DockerHost(host, timeout=settings.docker_timeout, max_pool_size=pool_size) as docker:
        yield Tick(settings, host, task, docker, redis_client)


def sweep(
    tick: Tick, *, deadline: float | None = None, yield_to: Callable[[], bool] | None = None
) -> SweepOutcome:
    """Sweep the tick's host for its task; never raises for host, Redis or lease trouble.

    Without a Redis client (a CLI sweep with Redis down) there is no lease and no identity
    record. Another sweep holding the lease makes this one a logged no-op: SKIPPED.
    `yield_to` is asked before each action (see SweepOptions).
    """
    options = SweepOptions.from_settings(tick.settings, tick.task, deadline, yield_to)
    header = ReportHeader(tick.task, tick.host.name, options.dry_run)
    lease: Lease = NoLease()
    try:
        info = tick.daemon_info()
        _check_identity(tick, info)
        rules = _rules(tick)
        lease = _take_lease(tick)
    except LeaseHeldError as exc:
        tick.log.info("sweep_skipped", why=str(exc))
        return SweepNotRun(tick.task, tick.host.name, Status.SKIPPED, why=str(exc))
    except (HostError, ContainerError) as exc:
        # Redis trouble here is RedisUnavailableError, a HostError: failed, never skipped. A
        # ContainerError comes from inspecting the janitor's own container: without its
        # compose project the janitor cannot tell its own containers, so it sweeps nothing.
        return _finished(tick, header.report(Status.FAILED, None, error=str(exc)))
    try:
        if tick.task is Task.PRUNE_UNUSED:
            report = _prune(tick, header, options, lease, info)
        else:
            report = sweep_containers(
                tick.docker,
                rules,
                options,
                lease,
                info.now,
                header=header,
                dead_leases=_lease_lookup(tick),
                first_seen=_first_seen_lookup(tick),
            )
    finally:
        lease.release()
    return _finished(tick, report)


def _prune(
    tick: Tick, header: ReportHeader, options: SweepOptions, lease: Lease, info: DaemonInfo
) -> SweepReport:
    try:
        rules = _unused_rules(tick)
    except HostError as exc:
        return header.report(Status.FAILED, info.now, error=str(exc))
    first_seen = _first_seen_lookup(tick)
    resources = ResourceHost(tick.docker)
    return sweep_unused(
        resources, rules, options, lease, info.now, header=header, first_seen=first_seen
    )


def _unused_rules(tick: Tick) -> UnusedRules:
    """The prune's rules, with a disk budget given as a share turned into bytes here."""
    settings = tick.settings
    budget = settings.image_disk_budget
    image_budget = None
    if budget is not None:
        capacity = None
        if budget.share is not None:
            root = tick.docker_root()
            try:
                capacity = pressure.read_disk(root).capacity if root is not None else None
            except OSError:
                capacity = None
            if capacity is None:
                raise HostError(
                    f"JANITOR_IMAGE_DISK_BUDGET={budget} needs the Docker root filesystem, "
                    f"which this worker cannot see (the daemon's DockerRootDir "
                    f"{tick.daemon_info().docker_root or '(none)'} is not one here): set "
                    "JANITOR_DOCKER_ROOT to where it is mounted, or give a size"
                )
        image_budget = budget.bytes_of(capacity)
    return UnusedRules(
        selector=settings.selector,
        grace=settings.unused_grace,
        budget_min_age=settings.image_min_age,
        image_budget=image_budget,
    )


def sweep_host(
    settings: Settings,
    host_name: str,
    task: Task,
    *,
    redis_client: redis.Redis[bytes] | None,
    deadline: float | None = None,
) -> SweepOutcome:
    """A whole tick for callers with nothing to do between opening it and sweeping."""
    with open_tick(settings, host_name, task, redis_client) as tick:
        return sweep(tick, deadline=deadline)


def _check_identity(tick: Tick, info: DaemonInfo) -> None:
    """Refuse a host name that now reaches another daemon (WrongHostError)."""
    if tick.redis is not None and check_daemon_identity(tick.redis, tick.host.name, info.id):
        tick.log.info("daemon_recorded", daemon_id=info.id, daemon_name=info.name)


def _rules(tick: Tick) -> Rules:
    own_ids = own_container_ids()
    return tick.settings.rules(own_ids, tick.docker.compose_projects_of(own_ids))


def _take_lease(tick: Tick) -> Lease:
    if tick.redis is None:
        return NoLease()
    ttl: timedelta = tick.settings.interval(tick.task.value)
    return RedisLease(tick.redis, tick.host.name, tick.task.value, ttl).acquire()


def _lease_lookup(tick: Tick) -> DeadLeaseLookup | None:
    client = tick.redis
    if client is None:
        return None
    lease_ttl = tick.settings.lease_grace

    def dead_leases(lease_keys: frozenset[str]) -> frozenset[str]:
        # Right after a failover a lease renewed on the old master may be missing here.
        failover.check_leases_readable(client, lease_ttl)
        return owner_leases.dead_leases(client, lease_keys)

    return dead_leases


def _first_seen_lookup(tick: Tick) -> FirstSeenLookup | None:
    if tick.redis is None:
        return None
    settings = tick.settings
    # Refreshed by every sweep of its task that sees the item; it only has to outlive the
    # longest grace plus a few missed ticks, after which an item nobody looked at starts
    # again from "now": dead containers for the stopped task, orphaned holders for ghosts,
    # unused images, volumes and networks for the prune.
    if tick.task is Task.KILL_GHOSTS:
        ttl = settings.holder_grace + 3 * settings.kill_interval
    elif tick.task is Task.PRUNE_UNUSED:
        ttl = settings.unused_grace + 3 * settings.interval(tick.task.value)
    else:
        ttl = max(settings.stopped_grace, settings.created_grace) + 3 * settings.remove_interval
    return functools.partial(firstseen.first_seen, tick.redis, tick.host.name, ttl=ttl)


def _finished(tick: Tick, report: SweepReport) -> SweepReport:
    """The sweep's closing lines: its failure, if any, at error level, then one summary."""
    if report.status is Status.FAILED:
        tick.log.error("sweep_failed", error=report.error)
    tick.log.info(
        "sweep_finished",
        status=report.status.value,
        scanned=report.scanned,
        counts=report.counts,
        duration_s=round(report.duration_s, 3),
        held=report.held,
        api_calls=sum(tick.docker.calls.values()),
    )
    return report
