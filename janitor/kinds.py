"""The kinds of sweep: the pure policy's decisions bound to the Docker adapter's verbs.

A kind tells the sweep engine what to list, what to inspect, what to do and whether it still
holds; it decides through `policy` and acts through `dockerhost`. Killing ghosts and removing
stopped containers are one kind with two tasks; a new kind of sweep is a new class here, run
by the same engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import structlog

from janitor import holders, policy
from janitor.dependents import DependencyReader
from janitor.dockerhost import DockerHost
from janitor.errors import LeasesUnknownError
from janitor.locks import REDIS_ERRORS, Lease
from janitor.model import Action, Container, HostFacts, Reason, Rules, SweepReport, Task, Verb
from janitor.sweep import ReportHeader, Survey, SweepOptions, run_engine
from janitor.vocabulary import Detail

# Given owner-lease keys, the ones whose lease is gone (janitor.lease.dead_leases).
DeadLeaseLookup = Callable[[frozenset[str]], frozenset[str]]


class FirstSeenLookup(Protocol):
    """janitor.firstseen.first_seen, bound to a Redis client, a host and a TTL."""

    def __call__(
        self, kind: str, item_ids: frozenset[str], now: datetime, *, record: bool
    ) -> dict[str, datetime]: ...


class ContainerKind:
    """Containers, for the ghost task (kill) or the stopped task (remove)."""

    def __init__(
        self,
        docker: DockerHost,
        rules: Rules,
        options: SweepOptions,
        *,
        dead_leases: DeadLeaseLookup | None,
        first_seen: FirstSeenLookup | None,
    ) -> None:
        """Without Redis (both lookups None) no owner lease counts as expired, and a dead
        container of unknown age is measured from its creation (policy._dead_since)."""
        self.docker = docker
        self.rules = rules
        self.options = options
        self.task = options.task
        self.dead_leases = dead_leases
        self.first_seen = first_seen
        self.facts = HostFacts()
        self.dependencies = DependencyReader(
            docker, concurrency=options.concurrency, deadline=options.deadline
        )
        # Holders this sweep spared for their dependents (the engine reports the count).
        self.held = 0
        # When the current batch of actions began (time.monotonic()): its re-checks share one
        # reading of the dependents taken after that.
        self.batch_began = time.monotonic()
        # Each candidate's position in the survey's list.
        self.listed_at: dict[str, int] = {}
        self.log = structlog.get_logger(__name__).bind(
            host=docker.name, task=self.task.value, dry_run=options.dry_run
        )

    def survey(self, now: datetime) -> Survey:
        summaries = self.docker.list_containers(self.rules.selector)
        candidates, self.facts = policy.survey(summaries, self.task, self.rules, now)
        self.listed_at = {c.id: position for position, c in enumerate(candidates)}
        return Survey(
            scanned=len(summaries),
            census=dict(Counter(str(s.state) for s in summaries)),
            candidate_ids=[c.id for c in candidates],
        )

    def inspect(self, item_id: str) -> Container:
        return self.docker.inspect(item_id)

    def decide(self, snapshots: Sequence[Container], now: datetime) -> list[Action]:
        """The policy's actions, less the holders its dependents hold (read from every
        container on the host, only when there is a candidate to hold)."""
        found = self.dependencies.read(snapshots) if snapshots else holders.NO_DEPENDENTS
        # Each record belongs to one task: a sweep refreshes it, and forgets what it lacks.
        if self.task is Task.KILL_GHOSTS:
            orphaned = holders.orphaned_holders(snapshots, self.rules, found)
            self.facts = dataclasses.replace(
                self.facts,
                dead_leases=self._look_up_dead(policy.lease_keys(snapshots)),
                orphaned_since=self._first_seen("orphaned-holder", orphaned, now),
            )
        else:
            self.facts = dataclasses.replace(
                self.facts, first_seen_dead=self._first_seen_dead(snapshots, now)
            )
        actions = policy.select(snapshots, self.task, self.rules, now, facts=self.facts)
        allowed, held = holders.spare_held(actions, found)
        self.held = len(held)
        # Oldest first: the newest containers stay until the last batch, so the re-checks'
        # `since` lists start from one that still exists and cost only what is new.
        # Ties (the same instant) go in the list's order, whatever order they were inspected in.
        created = {c.id: c.created_at or now for c in snapshots}
        return sorted(
            allowed,
            key=lambda a: (created.get(a.container_id, now), self.listed_at.get(a.container_id, 0)),
        )

    def begin_batch(self) -> None:
        self.batch_began = time.monotonic()

    @property
    def not_read(self) -> int:
        return self.dependencies.not_read

    def why_not(self, action: Action, current: Container, now: datetime) -> str | None:
        asked_at = self.batch_began
        facts = self.facts
        if action.reason is Reason.OWNER_LEASE_EXPIRED:
            # The owner may have renewed it since the decision: ask Redis again.
            facts = dataclasses.replace(
                facts, dead_leases=self._look_up_dead(policy.lease_keys([current]))
            )
        why = policy.still_warranted(action, current, self.task, self.rules, now, facts=facts)
        if why is not None:
            return why
        if holders.is_held(action, self.dependencies.current(action.container_id, asked_at)):
            # A member joined, or one started again, since the decision.
            return Detail.HOLDER_IN_USE
        return None

    def act(self, action: Action, current: Container) -> Detail | None:
        if action.verb is Verb.KILL:
            return self.docker.kill(current, self.options.stop_timeout)
        self.docker.remove(current.id, volumes=self.options.remove_volumes)
        return None

    def _first_seen_dead(
        self, snapshots: Sequence[Container], now: datetime
    ) -> dict[str, datetime] | None:
        dead = frozenset(c.id for c in snapshots if policy.is_dead_of_unknown_age(c))
        return self._first_seen("dead", dead, now)

    def _first_seen(
        self, record: str, item_ids: frozenset[str], now: datetime
    ) -> dict[str, datetime] | None:
        """When each item was first seen so, from Redis; None without Redis to ask."""
        if self.first_seen is None:
            return None
        try:
            # A dry run reads the record and leaves it as it was.
            return self.first_seen(record, item_ids, now, record=not self.options.dry_run)
        except REDIS_ERRORS as exc:
            # Unknown is not old: a record that cannot be read makes every one "seen now".
            self.log.warning(
                "first_seen_unrecorded", record=record, why=str(exc), containers=len(item_ids)
            )
            return {}

    def _look_up_dead(self, keys: frozenset[str]) -> frozenset[str]:
        if not keys:
            return frozenset()
        if self.dead_leases is None:
            self.log.warning("owner_leases_unchecked", why="no Redis", containers=len(keys))
            return frozenset()
        try:
            return self.dead_leases(keys)
        except (*REDIS_ERRORS, LeasesUnknownError) as exc:
            # Unknown is not expired: a lease we cannot read never makes a container a ghost.
            self.log.warning("owner_leases_unchecked", why=str(exc), containers=len(keys))
            return frozenset()


def sweep_containers(
    docker: DockerHost,
    rules: Rules,
    options: SweepOptions,
    lease: Lease,
    now: datetime,
    *,
    header: ReportHeader | None = None,
    dead_leases: DeadLeaseLookup | None = None,
    first_seen: FirstSeenLookup | None = None,
) -> SweepReport:
    """One container sweep of a host whose daemon clock reads `now`, by the shared engine.

    `header` is the tick's, when a tick runs it, so the report times the whole tick.
    """
    kind = ContainerKind(docker, rules, options, dead_leases=dead_leases, first_seen=first_seen)
    if header is None:
        header = ReportHeader(options.task, docker.name, options.dry_run)
    return run_engine(kind, header, options, lease, now)
