"""Plain frozen data that flows between the Docker adapter, the policy and the sweep."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path


class State(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    REMOVING = "removing"
    EXITED = "exited"
    DEAD = "dead"


class Task(StrEnum):
    KILL_GHOSTS = "kill-ghosts"
    REMOVE_STOPPED = "remove-stopped"
    PRUNE_UNUSED = "prune-unused"


class Verb(StrEnum):
    KILL = "kill"
    REMOVE = "remove"
    REMOVE_IMAGE = "remove-image"
    REMOVE_VOLUME = "remove-volume"
    REMOVE_NETWORK = "remove-network"


class Outcome(StrEnum):
    DONE = "done"
    PLANNED = "planned"
    GONE = "gone"
    REFUSED = "refused"
    FAILED = "failed"


class Status(StrEnum):
    OK = "ok"
    ABORTED = "aborted"
    FAILED = "failed"
    # A tick that did not sweep (SweepNotRun): pacing put it off, or another sweep held the lease.
    DEFERRED = "deferred"
    SKIPPED = "skipped"


class Reason(StrEnum):
    OVER_RUNTIME_BUDGET = "over_runtime_budget"
    EXITED_PAST_GRACE = "exited_past_grace"
    CREATED_NEVER_STARTED = "created_never_started"
    OWNER_LEASE_EXPIRED = "owner_lease_expired"
    OVER_MAX_STOPPED = "over_max_stopped"
    DEAD_PAST_GRACE = "dead_past_grace"
    HOLDER_ORPHANED = "holder_orphaned"
    BAD_LABEL = "bad_label"
    UNUSED_PAST_GRACE = "unused_past_grace"
    OVER_DISK_BUDGET = "over_disk_budget"


@dataclass(frozen=True, slots=True)
class TLSConfig:
    ca_cert: Path
    client_cert: Path | None
    client_key: Path | None


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One Docker host the janitor sweeps, by its name in JANITOR_HOSTS."""

    name: str
    url: str
    tls: TLSConfig | None = None

    @property
    def queue(self) -> str:
        return f"janitor.{self.name}"

    @property
    def is_tcp(self) -> bool:
        return self.url.startswith("tcp://")


@dataclass(frozen=True, slots=True)
class Selector:
    """Which containers are under management: one label key, optionally with a value, or all."""

    key: str | None
    value: str | None = None

    @property
    def matches_everything(self) -> bool:
        return self.key is None

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.key is None:
            return True
        if self.key not in labels:
            return False
        return self.value is None or labels[self.key] == self.value

    def __str__(self) -> str:
        if self.key is None:
            return "*"
        return self.key if self.value is None else f"{self.key}={self.value}"


@dataclass(frozen=True, slots=True)
class DiskBudget:
    """The in-scope images' allowance: a number of bytes, or a share of the Docker root fs."""

    size: int | None = None
    share: float | None = None

    def bytes_of(self, capacity: int | None) -> int | None:
        """The budget in bytes on a filesystem of `capacity`; None when that is unknown."""
        if self.size is not None:
            return self.size
        return None if capacity is None or self.share is None else int(capacity * self.share)

    def __str__(self) -> str:
        return f"{self.size} bytes" if self.size is not None else f"{(self.share or 0):.0%}"


@dataclass(frozen=True, slots=True)
class Summary:
    """What one list call says about a container: enough to rule most of them out cheaply."""

    id: str
    name: str
    state: State | str
    labels: Mapping[str, str]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Container:
    """What inspect says about a container. Unknown instants (Docker's zero time) are None."""

    id: str
    name: str
    state: State | str
    labels: Mapping[str, str]
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    auto_remove: bool = False
    restart_policy: str = ""
    # The containers whose namespaces it joins or volumes it mounts, as written.
    namespace_references: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamespaceUser:
    """A container as a possible dependent: whose namespaces it joins or volumes it mounts."""

    id: str
    name: str
    state: State | str
    # The containers it names (`container:<ref>` modes, --volumes-from), as written: a full
    # id, a short-id prefix or a name. None: its settings could not be read.
    references: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class Rules:
    """The policy's inputs that come from configuration and from who the janitor is."""

    selector: Selector
    max_runtime: timedelta
    stopped_grace: timedelta
    created_grace: timedelta
    own_container_ids: frozenset[str] = frozenset()
    own_compose_projects: frozenset[str] = frozenset()
    # A container whose owner lease is gone is a ghost once it has run this long.
    lease_grace: timedelta = timedelta(seconds=60)
    # Per janitor.group, the newest stopped containers kept for debugging; 0 keeps none.
    keep_last: int = 0
    # Cap on the host's stopped containers in scope, the oldest removed first; 0 is no cap.
    max_stopped: int = 0
    # A janitor.holder=true container is killed once it has had no running dependent this long.
    holder_grace: timedelta = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class HostFacts:
    """What a sweep learnt about the host besides the inspected containers themselves."""

    # Owner-lease keys (janitor.lease labels) with no live key in Redis.
    dead_leases: frozenset[str] = frozenset()
    # Stopped (exited or dead) containers in scope on the host, from the list call.
    stopped_in_scope: int = 0
    # Per group, stopped members that were not inspected: created within their grace, they
    # finished after every inspected member whose grace is no longer (policy.survey inspects
    # the members for which that does not hold).
    fresher_stopped_by_group: Mapping[str, int] = field(default_factory=dict)
    # Dead containers of unknown age (zero FinishedAt): when the janitor first saw each dead,
    # from the shared record in Redis. None: no record could be read (no Redis).
    first_seen_dead: Mapping[str, datetime] | None = None
    # Running janitor.holder=true containers without a running dependent: since when the
    # janitor first saw each so (Redis). None: no record could be read, so none is orphaned.
    orphaned_since: Mapping[str, datetime] | None = None


@dataclass(frozen=True, slots=True)
class Action:
    container_id: str
    name: str
    verb: Verb
    reason: Reason
    # The instant the decision rested on, so the sweep can tell a container that changed since.
    seen_started_at: datetime | None = None
    seen_finished_at: datetime | None = None

    @property
    def actionable(self) -> bool:
        return self.reason is not Reason.BAD_LABEL


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    outcome: Outcome
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "id": self.action.container_id,
            "name": self.action.name,
            "action": self.action.verb.value,
            "reason": self.action.reason.value,
            "outcome": self.outcome.value,
            "detail": str(self.detail),
        }


@dataclass(frozen=True, slots=True)
class SweepReport:
    task: Task
    host: str
    dry_run: bool
    status: Status
    daemon_time: datetime | None
    scanned: int
    duration_s: float
    results: tuple[ActionResult, ...] = ()
    error: str = ""
    # Containers under the selector by state, for the metrics; not part of the JSON report.
    census: Mapping[str, int] = field(default_factory=dict)
    # Bytes the done actions freed, by kind (container, image, volume), for the metrics.
    reclaimed: Mapping[str, int] = field(default_factory=dict)
    # Holders spared for their dependents: not actions, so counted on the sweep_finished line.
    held: int = 0

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        return counts

    def to_dict(self, *, max_done: int | None = None) -> dict[str, object]:
        """The contract's report; with `max_done`, `done` actions beyond that many are left
        out (every other action stays, with its detail) and counted in `actions_omitted`."""
        # Status and counts before the actions: a truncated view (Flower's result column)
        # shows the outcome first.
        report: dict[str, object] = {
            "task": self.task.value,
            "host": self.host,
            "dry_run": self.dry_run,
            "status": self.status.value,
            "counts": self.counts,
            "daemon_time": _rfc3339(self.daemon_time),
            "scanned": self.scanned,
            "duration_s": round(self.duration_s, 3),
        }
        if self.error:
            report["error"] = self.error
        kept = list(self.results)
        if max_done is not None:
            done = [r for r in self.results if r.outcome is Outcome.DONE]
            dropped = {id(r) for r in done[max_done:]}
            kept = [r for r in self.results if id(r) not in dropped]
            if dropped:
                report["actions_omitted"] = len(dropped)
        report["actions"] = [result.to_dict() for result in kept]
        return report


@dataclass(frozen=True, slots=True)
class SweepNotRun:
    """A tick that swept nothing: deferred by pacing, or skipped because the lease was held."""

    task: Task
    host: str
    status: Status
    why: str = ""
    # Pacing's figures (spawn rate, how long deferred), shown to the operator as they are.
    notes: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        result: dict[str, object] = {
            "task": self.task.value,
            "host": self.host,
            "status": self.status.value,
        }
        if self.why:
            result["why"] = self.why
        return {**result, **self.notes}


SweepOutcome = SweepReport | SweepNotRun


def _rfc3339(instant: datetime | None) -> str | None:
    if instant is None:
        return None
    return instant.isoformat().replace("+00:00", "Z")
