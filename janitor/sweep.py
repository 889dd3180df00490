"""One sweep of one host: lease, list, decide, re-check, act with bounded concurrency, report.

It decides nothing about WHICH containers: that is `policy`. It knows nothing of Celery.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis
import structlog

from janitor import lease as owner_leases
from janitor import policy
from janitor.dockerhost import DockerHost, own_container_ids
from janitor.errors import (
    ContainerError,
    ContainerGoneError,
    HostError,
    LeaseHeldError,
    LeaseLostError,
)
from janitor.locks import REDIS_ERRORS, Lease, NoLease, RedisLease, check_daemon_identity
from janitor.model import (
    Action,
    ActionResult,
    Container,
    HostFacts,
    Outcome,
    Reason,
    Rules,
    Status,
    SweepReport,
    Task,
    Verb,
)
from janitor.settings import Settings

log = structlog.get_logger(__name__)

# Given owner-lease keys, the ones whose lease is gone (janitor.lease.dead_leases).
DeadLeaseLookup = Callable[[frozenset[str]], frozenset[str]]

_OUTCOME_LEVEL = {
    Outcome.DONE: "info",
    Outcome.PLANNED: "info",
    Outcome.GONE: "info",
    Outcome.REFUSED: "info",
    Outcome.FAILED: "warning",
}


@dataclass(frozen=True, slots=True)
class SweepOptions:
    """How one sweep acts, apart from which containers it picks."""

    task: Task
    dry_run: bool = False
    concurrency: int = 8
    max_actions: int = 1000
    stop_timeout: timedelta = timedelta(seconds=5)
    remove_volumes: bool = True
    # time.monotonic() past which no new action starts; the rest waits for the next tick.
    deadline: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, task: Task, deadline: float | None = None
    ) -> SweepOptions:
        return cls(
            task=task,
            dry_run=settings.dry_run,
            concurrency=settings.concurrency,
            max_actions=settings.max_actions,
            stop_timeout=settings.stop_timeout,
            remove_volumes=settings.remove_volumes,
            deadline=deadline,
        )


class _Halt:
    """Set once by the first action that finds the sweep must stop; read by all others."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.status = Status.OK

    def __call__(self, reason: str, status: Status = Status.FAILED) -> None:
        if not self._event.is_set():
            self.reason, self.status = reason, status
            self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


def run_sweep(
    docker: DockerHost,
    rules: Rules,
    options: SweepOptions,
    lease: Lease,
    now: datetime,
    *,
    dead_leases: DeadLeaseLookup | None = None,
) -> SweepReport:
    """Sweep one host whose daemon clock reads `now`; never raises for host or lease trouble.

    Without `dead_leases` (no Redis) no owner lease counts as expired.
    """
    return _Sweep(docker, rules, options, lease, now, dead_leases=dead_leases).run()


class _Sweep:
    def __init__(
        self,
        docker: DockerHost,
        rules: Rules,
        options: SweepOptions,
        lease: Lease,
        now: datetime,
        *,
        dead_leases: DeadLeaseLookup | None,
    ) -> None:
        self.docker = docker
        self.rules = rules
        self.options = options
        self.lease = lease
        self.now = now
        self.task = options.task
        self.log = log.bind(host=docker.name, task=self.task.value, dry_run=options.dry_run)
        self.started = time.monotonic()
        self.scanned = 0
        self.census: dict[str, int] = {}
        self.halt = _Halt()
        self.dead_leases = dead_leases
        self.facts = HostFacts()

    def run(self) -> SweepReport:
        try:
            summaries = self.docker.list_containers(self.rules.selector)
            self.scanned = len(summaries)
            self.census = dict(collections.Counter(str(s.state) for s in summaries))
            candidates, facts = policy.survey(summaries, self.task, self.rules, self.now)
            containers = self._inspect_all([c.id for c in candidates])
        except HostError as exc:
            return self._report((), Status.FAILED, str(exc))
        self.facts = dataclasses.replace(
            facts, dead_leases=self._look_up_dead(policy.lease_keys(containers))
        )
        actions = policy.select(containers, self.task, self.rules, self.now, facts=self.facts)
        actionable = [a for a in actions if a.actionable]
        results = [
            ActionResult(a, Outcome.REFUSED, "bad_label") for a in actions if not a.actionable
        ]
        self.log.debug(
            "sweep_decided",
            scanned=self.scanned,
            candidates=len(candidates),
            eligible=len(actionable),
        )
        status, error = Status.OK, ""
        if len(actionable) > self.options.max_actions:
            self.log.error(
                "sweep_aborted",
                eligible=len(actionable),
                max_actions=self.options.max_actions,
                why="more eligible containers than JANITOR_MAX_ACTIONS; nothing was changed",
            )
            results += [ActionResult(a, Outcome.REFUSED, "over_max_actions") for a in actionable]
            status = Status.ABORTED
        elif self.options.dry_run:
            results += [ActionResult(a, Outcome.PLANNED) for a in actionable]
        for result in results:
            self._log_result(result)
        if status is Status.OK and not self.options.dry_run:
            results += self._act_all(actionable)  # logs each action as it ends
            status, error = self.halt.status, self.halt.reason
        return self._report(tuple(results), status, error)

    def _inspect_all(self, ids: Sequence[str]) -> list[Container]:
        def inspect(container_id: str) -> Container | None:
            try:
                return self.docker.inspect(container_id)
            except ContainerGoneError:
                return None  # removed since the list: nothing to decide about

        if not ids:
            return []
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="inspect") as pool:
            found = list(pool.map(inspect, ids))
        return [container for container in found if container is not None]

    def _act_all(self, actions: Sequence[Action]) -> list[ActionResult]:
        results: list[ActionResult | None] = [None] * len(actions)
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="act")
        try:
            futures = {pool.submit(self._act, action): i for i, action in enumerate(actions)}
            # Each change is logged as soon as it is made, not when the sweep ends: a worker
            # killed mid-sweep (hard time limit, OOM, SIGKILL) still leaves a line for every
            # container it touched. Logged from this thread, which carries the task's context.
            for future in as_completed(futures):
                result = future.result()
                self._log_result(result)
                results[futures[future]] = result
        finally:
            # Interrupted here (a soft time limit, Ctrl-C): actions not yet started never start.
            pool.shutdown(wait=True, cancel_futures=True)
        if self.halt:
            self.log.warning("sweep_halted", why=self.halt.reason, status=self.halt.status.value)
        return [result for result in results if result is not None]

    def _act(self, action: Action) -> ActionResult:
        if self.halt:
            return ActionResult(action, Outcome.REFUSED, f"sweep_stopped: {self.halt.reason}")
        if self.options.deadline is not None and time.monotonic() > self.options.deadline:
            self.halt("deadline reached; the rest waits for the next tick", Status.OK)
            return ActionResult(action, Outcome.REFUSED, "deadline_reached")
        try:
            return self._recheck_and_act(action)
        except ContainerError as exc:
            return ActionResult(action, exc.outcome, str(exc))
        except LeaseLostError as exc:
            self.halt(str(exc))
            return ActionResult(action, Outcome.REFUSED, "lease_lost")
        except HostError as exc:
            self.halt(str(exc))
            return ActionResult(action, Outcome.FAILED, str(exc))

    def _look_up_dead(self, keys: frozenset[str]) -> frozenset[str]:
        if not keys:
            return frozenset()
        if self.dead_leases is None:
            self.log.warning("owner_leases_unchecked", why="no Redis", containers=len(keys))
            return frozenset()
        try:
            return self.dead_leases(keys)
        except REDIS_ERRORS as exc:
            # Unknown is not expired: a lease we cannot read never makes a container a ghost.
            self.log.warning("owner_leases_unchecked", why=str(exc), containers=len(keys))
            return frozenset()

    def _recheck_and_act(self, action: Action) -> ActionResult:
        self.lease.confirm()
        current = self.docker.inspect(action.container_id)
        facts = self.facts
        if action.reason is Reason.OWNER_LEASE_EXPIRED:
            # The owner may have renewed it since the decision: ask Redis again.
            facts = dataclasses.replace(
                facts, dead_leases=self._look_up_dead(policy.lease_keys([current]))
            )
        why_not = policy.still_warranted(
            action, current, self.task, self.rules, self.now, facts=facts
        )
        if why_not:
            return ActionResult(action, Outcome.REFUSED, why_not)
        if action.verb is Verb.KILL:
            self.docker.kill(current, self.options.stop_timeout)
        else:
            self.docker.remove(current.id, volumes=self.options.remove_volumes)
        return ActionResult(action, Outcome.DONE)

    def _log_result(self, result: ActionResult) -> None:
        fields = {
            "container_id": result.action.container_id,
            "name": result.action.name,
            "action": result.action.verb.value,
            "reason": result.action.reason.value,
        }
        if result.detail:
            fields["detail"] = result.detail
        level = _OUTCOME_LEVEL[result.outcome]
        getattr(self.log, level)(f"action_{result.outcome.value}", **fields)

    def _report(
        self, results: tuple[ActionResult, ...], status: Status, error: str = ""
    ) -> SweepReport:
        return SweepReport(
            task=self.task,
            host=self.docker.name,
            dry_run=self.options.dry_run,
            status=status,
            daemon_time=self.now,
            scanned=self.scanned,
            duration_s=time.monotonic() - self.started,
            results=results,
            error=error if status is Status.FAILED else "",
            census=self.census,
        )


def _failed_report(host: str, options: SweepOptions, started: float, error: str) -> SweepReport:
    return SweepReport(
        task=options.task,
        host=host,
        dry_run=options.dry_run,
        status=Status.FAILED,
        daemon_time=None,
        scanned=0,
        duration_s=time.monotonic() - started,
        error=error,
    )


def sweep_host(
    settings: Settings,
    host_name: str,
    task: Task,
    *,
    redis_client: redis.Redis[bytes] | None,
    deadline: float | None = None,
) -> SweepReport | None:
    """Connect, read the daemon's clock, check the daemon's identity, take the lease, sweep.

    Without a Redis client (a CLI sweep with Redis down) there is no lease and no identity
    record. Returns None when another sweep of the same (host, task) holds the lease.
    Raises UnknownHostError, before touching anything, for a host name not configured.
    """
    started = time.monotonic()
    host = settings.host(host_name)
    options = SweepOptions.from_settings(settings, task, deadline)
    bound = log.bind(host=host.name, task=task.value, dry_run=options.dry_run)
    pool_size = settings.concurrency + 2
    with DockerHost(host, timeout=settings.docker_timeout, max_pool_size=pool_size) as docker:
        lease: Lease = NoLease()
        try:
            info = docker.info()
            if redis_client is not None:
                if check_daemon_identity(redis_client, host.name, info.id):
                    bound.info("daemon_recorded", daemon_id=info.id, daemon_name=info.name)
                ttl = settings.interval(task.value)
                lease = RedisLease(redis_client, host.name, task.value, ttl).acquire()
            own_ids = own_container_ids()
            rules = settings.rules(own_ids, docker.compose_projects_of(own_ids))
        except LeaseHeldError as exc:
            bound.info("sweep_skipped", why=str(exc))
            return None
        except (HostError, *REDIS_ERRORS) as exc:
            lease.release()
            error = str(exc) if isinstance(exc, HostError) else f"Redis unreachable: {exc}"
            bound.error("sweep_failed", error=error)
            report = _failed_report(host.name, options, started, error)
        else:
            try:
                lookup = None
                if redis_client is not None:
                    lookup = functools.partial(owner_leases.dead_leases, redis_client)
                report = run_sweep(docker, rules, options, lease, info.now, dead_leases=lookup)
            finally:
                lease.release()
        if report.status is Status.FAILED and report.results:
            bound.error("sweep_failed", error=report.error)
        bound.info(
            "sweep_finished",
            status=report.status.value,
            scanned=report.scanned,
            counts=report.counts,
            duration_s=round(time.monotonic() - started, 3),
            api_calls=sum(docker.calls.values()),
        )
    return report
