"""The pure rules for unused images, volumes and networks, and their kind on the engine,
as tables of plain data with a fixed NOW, plus the invariants as properties."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.fakehost import emitted

from janitor import unused
from janitor.config_syntax import parse_disk_budget
from janitor.kinds_unused import sweep_unused
from janitor.locks import NoLease
from janitor.model import Action, DiskBudget, Reason, Selector, Task, Verb
from janitor.sweep import SweepOptions
from janitor.unused import References, Resource, ResourceKind, UnusedFacts, UnusedRules, Usage
from janitor.vocabulary import parse_size

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MANAGED = {"janitor.managed": "true"}
SELECTOR = Selector("janitor.managed", "true")
RULES = UnusedRules(SELECTOR, grace=timedelta(hours=1), budget_min_age=timedelta(minutes=10))
HOUR = timedelta(hours=1)
NO_USERS = Usage()


def item(
    kind: ResourceKind = ResourceKind.IMAGE,
    name: str = "a",
    *,
    labels: dict[str, str] | None = None,
    arrived: timedelta | None = None,
    size: int = 100,
) -> Resource:
    return Resource(
        kind=kind,
        id=f"{kind.value}-{name}",
        name=name,
        labels=MANAGED if labels is None else labels,
        arrived_at=None if arrived is None else NOW - arrived,
        size=size,
        aliases=(name,),
    )


def seen(*items: Resource, ago: timedelta = 2 * HOUR) -> UnusedFacts:
    return UnusedFacts(first_seen_unused={r.id: NOW - ago for r in items})


def select(
    items: Sequence[Resource],
    facts: UnusedFacts,
    usage: Usage = NO_USERS,
    rules: UnusedRules = RULES,
    image_bytes: int = 0,
) -> dict[str, Reason]:
    chosen = unused.select_unused(items, usage, rules, NOW, facts, image_bytes=image_bytes)
    return {a.container_id: a.reason for a in chosen}


@pytest.mark.parametrize(
    ("case", "resource", "usage", "removed"),
    [
        ("unused image", item(), Usage(), True),
        ("image in use by id", item(), Usage(images=frozenset({"image-a"})), False),
        ("a container of unknown image", item(), Usage(every_image_held=True), False),
        ("protected", item(labels={**MANAGED, "janitor.protect": "true"}), Usage(), False),
        ("unmanaged", item(labels={"team": "ide"}), Usage(), False),
        ("unused volume", item(ResourceKind.VOLUME), Usage(), True),
        (
            "volume mounted by a stopped container",
            item(ResourceKind.VOLUME),
            Usage(volumes=frozenset({"volume-a"})),
            False,
        ),
        ("unused network", item(ResourceKind.NETWORK), Usage(), True),
        (
            "network named by a created container",
            item(ResourceKind.NETWORK),
            Usage(networks=frozenset({"a"})),
            False,
        ),
        ("predefined network", item(ResourceKind.NETWORK, "bridge"), Usage(), False),
    ],
)
def test_what_is_removed_past_the_grace(
    case: str, resource: Resource, usage: Usage, removed: bool
) -> None:
    del case
    chosen = select([resource], seen(resource), usage)
    assert chosen == ({resource.id: Reason.UNUSED_PAST_GRACE} if removed else {})


@pytest.mark.parametrize(
    ("case", "arrived", "event", "first_seen", "removed"),
    [
        ("seen unused for two hours", None, None, 2 * HOUR, True),
        ("seen unused for a minute", None, None, timedelta(minutes=1), False),
        ("arrived ten minutes ago", timedelta(minutes=10), None, 2 * HOUR, False),
        ("used by a container ten minutes ago", None, timedelta(minutes=10), 2 * HOUR, False),
        (
            "an old arrival does not beat the first sight",
            30 * HOUR,
            None,
            timedelta(minutes=5),
            False,
        ),
    ],
)
def test_age_counts_from_the_latest_of_arrival_use_and_first_sight(
    case: str,
    arrived: timedelta | None,
    event: timedelta | None,
    first_seen: timedelta,
    removed: bool,
) -> None:
    del case
    image = item(arrived=arrived)
    facts = UnusedFacts(
        last_event_at={} if event is None else {"a": NOW - event},
        first_seen_unused={image.id: NOW - first_seen},
    )
    assert bool(select([image], facts)) is removed


def test_without_a_first_seen_record_nothing_is_old() -> None:
    image = item(arrived=30 * HOUR)
    assert select([image], UnusedFacts(first_seen_unused=None)) == {}
    assert select([image], UnusedFacts(first_seen_unused={})) == {}


def test_a_star_selector_never_reaches_a_volume() -> None:
    everything = UnusedRules(Selector(None), grace=HOUR, budget_min_age=HOUR)
    volume, image = item(ResourceKind.VOLUME, labels={}), item(labels={})
    assert select([volume, image], seen(volume, image), rules=everything) == {
        image.id: Reason.UNUSED_PAST_GRACE
    }


def test_the_disk_budget_takes_least_recently_used_first_and_stops_under_it() -> None:
    budget = UnusedRules(
        SELECTOR, grace=HOUR, budget_min_age=timedelta(minutes=10), image_budget=250
    )
    oldest, middle, newest = (
        item(name=n, arrived=timedelta(minutes=m)) for n, m in (("o", 50), ("m", 40), ("n", 30))
    )
    too_young = item(name="y", arrived=timedelta(minutes=5))
    facts = seen(oldest, middle, newest, too_young, ago=timedelta(minutes=55))
    chosen = select([newest, too_young, oldest, middle], facts, rules=budget, image_bytes=400)
    assert chosen == {oldest.id: Reason.OVER_DISK_BUDGET, middle.id: Reason.OVER_DISK_BUDGET}


def test_the_disk_budget_never_takes_an_image_younger_than_its_minimum_age() -> None:
    budget = UnusedRules(SELECTOR, grace=HOUR, budget_min_age=timedelta(minutes=10), image_budget=0)
    young = item(arrived=timedelta(minutes=5))
    assert select([young], seen(young), rules=budget, image_bytes=10**9) == {}


def test_images_removed_past_the_grace_count_towards_the_budget() -> None:
    budget = UnusedRules(
        SELECTOR, grace=HOUR, budget_min_age=timedelta(minutes=10), image_budget=150
    )
    stale, recent = item(name="s"), item(name="r", arrived=timedelta(minutes=20))
    facts = UnusedFacts(first_seen_unused={stale.id: NOW - 2 * HOUR, recent.id: NOW - 2 * HOUR})
    assert select([stale, recent], facts, rules=budget, image_bytes=200) == {
        stale.id: Reason.UNUSED_PAST_GRACE
    }


@pytest.mark.parametrize(
    ("case", "current", "users", "detail"),
    [
        ("still unused", item(), [], None),
        (
            "a container made from it since",
            item(),
            [References("image-a")],
            "in_use_since_decision",
        ),
        ("a container of unknown image since", item(), [References(None)], "in_use_since_decision"),
        (
            "protected since",
            item(labels={**MANAGED, "janitor.protect": "1"}),
            [],
            "no_longer_eligible",
        ),
        ("tagged again since", item(arrived=timedelta(minutes=1)), [], "no_longer_eligible"),
    ],
)
def test_the_re_check_right_before_a_removal(
    case: str, current: Resource, users: list[References], detail: str | None
) -> None:
    del case
    action = Action(current.id, current.name, Verb.REMOVE_IMAGE, Reason.UNUSED_PAST_GRACE)
    facts = seen(current)
    assert unused.why_not(action, current, users, rules=RULES, now=NOW, facts=facts) == detail


def test_usage_reads_images_volumes_and_networks_by_every_name() -> None:
    usage = unused.usage_of(
        [References("sha256:1", frozenset({"data"}), frozenset({"netid", "build"}))]
    )
    assert usage.holds(Resource(ResourceKind.IMAGE, "sha256:1", "x", MANAGED, None))
    assert usage.holds(Resource(ResourceKind.VOLUME, "data", "data", MANAGED, None))
    named = Resource(ResourceKind.NETWORK, "other-id", "build", MANAGED, None, aliases=("build",))
    assert usage.holds(named)


KINDS = st.sampled_from(list(ResourceKind))
LABELS = st.dictionaries(
    st.sampled_from(["janitor.managed", "janitor.protect", "team"]),
    st.sampled_from(["true", "false", "yes", "ide"]),
)
AGES = st.one_of(st.none(), st.integers(0, 10**6).map(lambda s: timedelta(seconds=s)))


@st.composite
def resources(draw: st.DrawFn) -> Resource:
    kind = draw(KINDS)
    name = draw(st.sampled_from(["a", "b", "bridge", "none", "host"]))
    return Resource(
        kind,
        f"{kind.value}-{name}-{draw(st.integers(0, 99))}",
        name,
        draw(LABELS),
        None if (age := draw(AGES)) is None else NOW - age,
        size=draw(st.integers(0, 1000)),
        aliases=(name,),
    )


@given(
    st.lists(resources(), max_size=8, unique_by=lambda r: r.id),
    st.sampled_from([SELECTOR, Selector(None), Selector("team")]),
    st.one_of(st.none(), st.integers(0, 3000)),
    st.booleans(),
    st.booleans(),
)
def test_protected_used_predefined_or_unrecorded_items_are_never_selected(
    items: list[Resource], selector: Selector, budget: int | None, use_all: bool, recorded: bool
) -> None:
    rules = UnusedRules(
        selector, grace=HOUR, budget_min_age=timedelta(minutes=10), image_budget=budget
    )
    usage = unused.usage_of(
        [References(r.id, frozenset({r.id}), frozenset({r.id})) for r in items if use_all]
    )
    facts = seen(*items, ago=30 * HOUR) if recorded else UnusedFacts()
    chosen = unused.select_unused(items, usage, rules, NOW, facts, image_bytes=10**6)
    by_id = {r.id: r for r in items}
    assert len({a.container_id for a in chosen}) == len(chosen), "one action per item"
    for action in chosen:
        picked = by_id[action.container_id]
        assert recorded
        assert not use_all
        assert not unused.is_protected(picked.labels)
        assert not (
            picked.kind is ResourceKind.NETWORK and picked.name in unused.PREDEFINED_NETWORKS
        )
        assert not (picked.kind is ResourceKind.VOLUME and selector.matches_everything)
        assert selector.matches(picked.labels)


def test_sizes_and_budgets_parse() -> None:
    assert parse_size("500MiB") == 500 * 1024**2
    assert parse_size("50GB") == 50 * 10**9
    assert parse_disk_budget("80%") == DiskBudget(share=0.8)
    assert parse_disk_budget("1k") == DiskBudget(size=1000)
    assert DiskBudget(share=0.5).bytes_of(1000) == 500
    assert DiskBudget(share=0.5).bytes_of(None) is None
    for bad in ("5 PB", "0%", "101%", "-1", "lots"):
        with pytest.raises(ValueError, match=r"size|percentage"):
            parse_disk_budget(bad)


class FakeResources:
    """ResourceHost's surface over a list of resources, for the kind's shell."""

    name = "alpha"

    def __init__(self, items: list[Resource]) -> None:
        self.items = {r.id: r for r in items}
        self.removed: list[str] = []

    def references(self) -> list[References]:
        return []

    def references_to(self, resource: Resource) -> list[References]:
        del resource
        return []

    def list(self, kind: ResourceKind) -> list[Resource]:
        return [r for r in self.items.values() if r.kind is kind]

    def inspect(self, kind: ResourceKind, item_id: str) -> Resource:
        del kind
        return self.items[item_id]

    def remove(self, resource: Resource) -> None:
        self.removed.append(resource.id)

    @staticmethod
    def volume_bytes(volume: Resource) -> int:
        del volume
        return 7

    def arrivals_and_uses(self, since: datetime, until: datetime) -> dict[str, datetime]:
        del since, until
        return {}


def prune(fake: FakeResources, first_seen: Any, **options: Any) -> Any:
    return sweep_unused(
        fake,  # type: ignore[arg-type]
        RULES,
        SweepOptions(task=Task.PRUNE_UNUSED, **options),
        NoLease(),
        NOW,
        first_seen=first_seen,
    )


def test_without_redis_the_prune_says_so_and_removes_nothing() -> None:
    fake = FakeResources([item(), item(ResourceKind.VOLUME)])
    with capture_logs() as logs:
        report = prune(fake, None)
    assert report.results == ()
    assert fake.removed == []
    emitted(logs, "unused_unrecorded", why="no Redis", candidates=2)


def test_the_prune_reports_what_it_freed_by_kind() -> None:
    image, volume, net = item(size=300), item(ResourceKind.VOLUME), item(ResourceKind.NETWORK)
    fake = FakeResources([image, volume, net])
    report = prune(fake, lambda _kind, ids, _now, **_: {i: NOW - 2 * HOUR for i in ids})
    assert sorted(fake.removed) == sorted([image.id, volume.id, net.id])
    assert report.reclaimed == {"image": 300, "volume": 7}, "a network frees no disk"
    assert {r.action.verb for r in report.results} == {
        Verb.REMOVE_IMAGE,
        Verb.REMOVE_VOLUME,
        Verb.REMOVE_NETWORK,
    }


def test_the_cap_counts_images_volumes_and_networks_together() -> None:
    fake = FakeResources([item(), item(ResourceKind.VOLUME), item(ResourceKind.NETWORK)])
    report = prune(
        fake, lambda _kind, ids, _now, **_: {i: NOW - 2 * HOUR for i in ids}, max_actions=2
    )
    assert report.status.value == "aborted"
    assert fake.removed == []
