"""The unused-resource kind of sweep: images, volumes and networks no container refers to,
decided by the pure `unused` rules, removed through `dockerhost.resources`, run by the same
engine as containers (so one cap, one dry run, one re-check and one report for all three).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import structlog

from janitor import unused
from janitor.dockerhost.resources import ResourceHost
from janitor.kinds import FirstSeenLookup
from janitor.locks import REDIS_ERRORS, Lease
from janitor.model import Action, SweepReport
from janitor.sweep import ReportHeader, Survey, SweepOptions, run_engine
from janitor.unused import Resource, ResourceKind, UnusedFacts, UnusedRules


class UnusedKind:
    """Unused images, volumes and networks of one host, for the prune-unused task."""

    def __init__(
        self,
        resources: ResourceHost,
        rules: UnusedRules,
        options: SweepOptions,
        *,
        first_seen: FirstSeenLookup | None,
    ) -> None:
        """Without Redis (first_seen None) nothing has been seen unused for the grace: the
        sweep lists and reports, and removes nothing."""
        self.resources = resources
        self.rules = rules
        self.options = options
        self.task = options.task
        self.first_seen = first_seen
        self.kinds: dict[str, ResourceKind] = {}
        self.usage = unused.Usage()
        self.facts = UnusedFacts()
        self.image_bytes = 0
        self.reclaimed: Counter[str] = Counter()
        self._reclaimed_lock = threading.Lock()
        self.log = structlog.get_logger(__name__).bind(
            host=resources.name, task=self.task.value, dry_run=options.dry_run
        )

    def survey(self, now: datetime) -> Survey:
        # "Used" first: an item created after its users were listed is young anyway.
        self.usage = unused.usage_of(self.resources.references())
        listed = self.resources.list(ResourceKind.IMAGE) + self.resources.list(ResourceKind.NETWORK)
        if not self.rules.selector.matches_everything:
            listed += self.resources.list(ResourceKind.VOLUME)
        self.kinds = {r.id: r.kind for r in listed}
        self.image_bytes = sum(
            r.size or 0
            for r in listed
            if r.kind is ResourceKind.IMAGE and unused.is_in_scope(r, self.rules.selector)
        )
        found = unused.candidates(listed, self.usage, self.rules.selector)
        self.facts = UnusedFacts(
            last_event_at=self.resources.arrivals_and_uses(now - self.rules.grace, now),
            first_seen_unused=self._first_seen_unused(found, now),
        )
        return Survey(scanned=len(listed), census={}, candidate_ids=[r.id for r in found])

    def inspect(self, item_id: str) -> Resource:
        return self.resources.inspect(self.kinds[item_id], item_id)

    def decide(self, snapshots: Sequence[Resource], now: datetime) -> list[Action]:
        return unused.select_unused(
            snapshots, self.usage, self.rules, now, self.facts, image_bytes=self.image_bytes
        )

    def why_not(self, action: Action, current: Resource, now: datetime) -> str | None:
        # Whatever refers to it now, asked of the daemon: a container created since the
        # decision, even a stopped one, keeps it (the daemon itself would let a network go).
        users = self.resources.references_to(current)
        return unused.why_not(action, current, users, rules=self.rules, now=now, facts=self.facts)

    def act(self, action: Action, current: Resource) -> None:
        del action
        # Measured before: once removed, a volume's data cannot be counted.
        freed = self.resources.volume_bytes(current) if current.kind is ResourceKind.VOLUME else 0
        self.resources.remove(current)
        if current.kind is ResourceKind.NETWORK:
            return  # a network frees no disk
        if current.kind is ResourceKind.IMAGE:
            freed = current.size or 0
        with self._reclaimed_lock:
            self.reclaimed[current.kind.value] += freed

    def _first_seen_unused(
        self, found: Sequence[Resource], now: datetime
    ) -> dict[str, datetime] | None:
        if self.first_seen is None:
            self.log.warning("unused_unrecorded", why="no Redis", candidates=len(found))
            return None
        seen: dict[str, datetime] = {}
        try:
            for kind in ResourceKind:
                ids = frozenset(r.id for r in found if r.kind is kind)
                # A dry run reads the record and leaves it as it was.
                record = not self.options.dry_run
                seen |= self.first_seen(f"unused-{kind.value}", ids, now, record=record)
        except REDIS_ERRORS as exc:
            self.log.warning("unused_unrecorded", why=str(exc), candidates=len(found))
            return None
        return seen


def sweep_unused(
    resources: ResourceHost,
    rules: UnusedRules,
    options: SweepOptions,
    lease: Lease,
    now: datetime,
    *,
    header: ReportHeader | None = None,
    first_seen: FirstSeenLookup | None = None,
) -> SweepReport:
    """One prune of a host's unused images, volumes and networks, by the shared engine;
    `header` is the tick's, when a tick runs it, so the report times the whole tick."""
    kind = UnusedKind(resources, rules, options, first_seen=first_seen)
    if header is None:
        header = ReportHeader(options.task, resources.name, options.dry_run)
    report = run_engine(kind, header, options, lease, now)
    return dataclasses.replace(report, reclaimed=dict(kind.reclaimed))
