"""PURE rules for unused images, volumes and networks: what is in scope, what is in use, how
long each has been unused, and which go (past the grace, or over the image disk budget).

No I/O, no clock, no logging: the adapter's snapshots, the containers' references and the
instants known about each item come in; actions with reasons go out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from janitor.model import Action, Reason, Selector, Verb
from janitor.policy import is_protected
from janitor.vocabulary import Detail

# Docker's own networks; removing one is refused by the daemon, and no selector reaches them.
PREDEFINED_NETWORKS = frozenset({"bridge", "host", "none"})


class ResourceKind(StrEnum):
    IMAGE = "image"
    VOLUME = "volume"
    NETWORK = "network"


VERBS = {
    ResourceKind.IMAGE: Verb.REMOVE_IMAGE,
    ResourceKind.VOLUME: Verb.REMOVE_VOLUME,
    ResourceKind.NETWORK: Verb.REMOVE_NETWORK,
}
KIND_OF_VERB = {verb: kind for kind, verb in VERBS.items()}


@dataclass(frozen=True, slots=True)
class Resource:
    """An image (by id), a volume (by name) or a network (by id), as the daemon lists it."""

    kind: ResourceKind
    id: str
    name: str
    labels: Mapping[str, str]
    # A trustworthy arrival on this daemon: a volume's or network's creation, an image's last
    # tag (pull, import, commit, tag). Never an image's Created, which is its build time.
    arrived_at: datetime | None
    size: int | None = None
    # Every name the item is known by besides its id: an image's tags, a network's name.
    aliases: tuple[str, ...] = ()
    # Where a volume's data lives on the daemon's filesystem.
    mountpoint: str = ""


@dataclass(frozen=True, slots=True)
class References:
    """What one container, in any state, refers to. None: a reference that cannot be read."""

    image_id: str | None
    volumes: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()  # ids and names


@dataclass(frozen=True, slots=True)
class Usage:
    """Every image, volume and network some container refers to, whatever the selector."""

    images: frozenset[str] = frozenset()
    volumes: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    # A container whose image cannot be read might use any image: then none is unused.
    every_image_held: bool = False

    def holds(self, resource: Resource) -> bool:
        names = {resource.id, *resource.aliases}
        match resource.kind:
            case ResourceKind.IMAGE:
                return self.every_image_held or bool(names & self.images)
            case ResourceKind.VOLUME:
                return bool(names & self.volumes)
            case ResourceKind.NETWORK:
                return bool(names & self.networks)


def usage_of(references: Iterable[References]) -> Usage:
    images: set[str] = set()
    volumes: set[str] = set()
    networks: set[str] = set()
    every_image_held = False
    for refs in references:
        if refs.image_id is None:
            every_image_held = True
        else:
            images.add(refs.image_id)
        volumes |= refs.volumes
        networks |= refs.networks
    return Usage(frozenset(images), frozenset(volumes), frozenset(networks), every_image_held)


@dataclass(frozen=True, slots=True)
class UnusedRules:
    selector: Selector
    grace: timedelta
    # The disk budget never takes an image unused for less than this.
    budget_min_age: timedelta
    # Bytes the in-scope images may take; None: no budget.
    image_budget: int | None = None


@dataclass(frozen=True, slots=True)
class UnusedFacts:
    """Instants known about the items besides their own snapshot."""

    # Latest arrival or use of an item (by id or alias) in the daemon's event buffer.
    last_event_at: Mapping[str, datetime] = field(default_factory=dict)
    # When the janitor first saw each item unused (Redis); None: no record (no Redis).
    first_seen_unused: Mapping[str, datetime] | None = None


def is_in_scope(resource: Resource, selector: Selector) -> bool:
    """Matched by its own labels; never protected, never predefined; a `*` never reaches a
    volume, which holds someone's data."""
    if is_protected(resource.labels):
        return False
    if resource.kind is ResourceKind.NETWORK and resource.name in PREDEFINED_NETWORKS:
        return False
    if resource.kind is ResourceKind.VOLUME and selector.matches_everything:
        return False
    return selector.matches(resource.labels)


def unused_since(resource: Resource, facts: UnusedFacts) -> datetime | None:
    """The latest instant it arrived, was used or was first seen unused; None when the janitor
    has no record of seeing it unused, which makes it never old."""
    if facts.first_seen_unused is None or resource.id not in facts.first_seen_unused:
        return None
    first_seen = facts.first_seen_unused[resource.id]
    last_used = last_known_use(resource, facts)
    return first_seen if last_used is None else max(first_seen, last_used)


def last_known_use(resource: Resource, facts: UnusedFacts) -> datetime | None:
    """Its latest arrival or use the daemon tells of; what least-recently-used ranks by."""
    events = facts.last_event_at
    known = [events[n] for n in (resource.id, *resource.aliases) if n in events]
    if resource.arrived_at is not None:
        known.append(resource.arrived_at)
    return max(known, default=None)


def candidates(resources: Iterable[Resource], usage: Usage, selector: Selector) -> list[Resource]:
    """The in-scope items no container refers to: the ones whose age matters."""
    return [r for r in resources if is_in_scope(r, selector) and not usage.holds(r)]


def select_unused(
    snapshots: Sequence[Resource],
    usage: Usage,
    rules: UnusedRules,
    now: datetime,
    facts: UnusedFacts,
    *,
    image_bytes: int = 0,
) -> list[Action]:
    """Unused items past the grace; then, while the in-scope images (`image_bytes` of them,
    used or not) take more than the budget, unused images past the budget's minimum age,
    least recently used first."""
    unused = candidates(snapshots, usage, rules.selector)
    ages = {r.id: now - since for r in unused if (since := unused_since(r, facts)) is not None}
    past_grace = [r for r in unused if r.id in ages and ages[r.id] >= rules.grace]
    actions = [_action(r, Reason.UNUSED_PAST_GRACE) for r in past_grace]
    if rules.image_budget is None:
        return actions
    total = image_bytes - sum(r.size or 0 for r in past_grace if r.kind is ResourceKind.IMAGE)
    taken = {r.id for r in past_grace}
    # Ranked by the last use the daemon tells of; where it tells none, by the first sight.
    least_recently_used_first = sorted(
        (
            r
            for r in unused
            if r.kind is ResourceKind.IMAGE
            and r.id not in taken
            and r.id in ages
            and ages[r.id] >= rules.budget_min_age
        ),
        key=lambda r: (last_known_use(r, facts) or now - ages[r.id], r.id),
    )
    for image in least_recently_used_first:
        if total <= rules.image_budget:
            break
        actions.append(_action(image, Reason.OVER_DISK_BUDGET))
        total -= image.size or 0
    return actions


def why_not(
    action: Action,
    current: Resource,
    references: Iterable[References],
    *,
    rules: UnusedRules,
    now: datetime,
    facts: UnusedFacts,
) -> str | None:
    """Why the removal must not go ahead on the item as it is now, with the containers that
    refer to it now; None when it may. The budget's total is not measured again: a removal
    decided over budget stays bounded by the minimum age."""
    if usage_of(references).holds(current):
        return Detail.IN_USE_SINCE_DECISION
    since = unused_since(current, facts)
    floor = rules.grace if action.reason is Reason.UNUSED_PAST_GRACE else rules.budget_min_age
    if not is_in_scope(current, rules.selector) or since is None or now - since < floor:
        return Detail.NO_LONGER_ELIGIBLE
    return None


def _action(resource: Resource, reason: Reason) -> Action:
    return Action(resource.id, resource.name, VERBS[resource.kind], reason)
