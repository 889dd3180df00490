"""Owner leases, keep-last-N and the stopped cap: the policy's cross-container rules."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from janitor.model import (
    Action,
    Container,
    HostFacts,
    Reason,
    Rules,
    Selector,
    State,
    Summary,
    Task,
)
from janitor.policy import could_be_eligible, decide, select, still_warranted, survey

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
MANAGED = {"janitor.managed": "true"}
RULES = Rules(
    selector=Selector("janitor.managed", "true"),
    max_runtime=timedelta(hours=2),
    stopped_grace=timedelta(minutes=10),
    created_grace=timedelta(hours=1),
    lease_grace=timedelta(seconds=60),
)


def cid(n: int) -> str:
    return f"{n:064x}"


def running(n: int, *, started: timedelta, labels: dict[str, str] | None = None) -> Container:
    return Container(
        id=cid(n),
        name=f"c{n}",
        state=State.RUNNING,
        labels={**MANAGED, **(labels or {})},
        created_at=NOW - started - timedelta(seconds=1),
        started_at=NOW - started,
        finished_at=None,
    )


def exited(n: int, *, finished: timedelta, labels: dict[str, str] | None = None) -> Container:
    return Container(
        id=cid(n),
        name=f"c{n}",
        state=State.EXITED,
        labels={**MANAGED, **(labels or {})},
        created_at=NOW - finished - timedelta(minutes=1),
        started_at=NOW - finished - timedelta(seconds=30),
        finished_at=NOW - finished,
    )


def summary_of(container: Container) -> Summary:
    assert container.created_at is not None
    return Summary(
        container.id, container.name, container.state, container.labels, container.created_at
    )


def reasons(actions: list[Action]) -> dict[str, Reason]:
    return {a.container_id: a.reason for a in actions}


# --- owner leases -------------------------------------------------------------------------


def test_dead_lease_kills_a_young_container_past_the_lease_grace() -> None:
    young = running(1, started=timedelta(minutes=5), labels={"janitor.lease": "s1"})
    action = decide(
        young, Task.KILL_GHOSTS, RULES, NOW, facts=HostFacts(dead_leases=frozenset({"s1"}))
    )
    assert action is not None
    assert action.reason is Reason.OWNER_LEASE_EXPIRED


def test_live_lease_leaves_it_to_the_budget() -> None:
    young = running(1, started=timedelta(minutes=5), labels={"janitor.lease": "s1"})
    assert decide(young, Task.KILL_GHOSTS, RULES, NOW) is None
    old = running(2, started=timedelta(hours=3), labels={"janitor.lease": "s1"})
    action = decide(old, Task.KILL_GHOSTS, RULES, NOW)
    assert action is not None
    assert action.reason is Reason.OVER_RUNTIME_BUDGET


def test_missing_lease_right_after_start_is_not_expiry() -> None:
    fresh = running(1, started=timedelta(seconds=30), labels={"janitor.lease": "s1"})
    facts = HostFacts(dead_leases=frozenset({"s1"}))
    assert decide(fresh, Task.KILL_GHOSTS, RULES, NOW, facts=facts) is None


def test_lease_rule_never_beats_protection_or_a_bad_label() -> None:
    facts = HostFacts(dead_leases=frozenset({"s1"}))
    protected = running(
        1, started=timedelta(hours=1), labels={"janitor.lease": "s1", "janitor.protect": "true"}
    )
    assert decide(protected, Task.KILL_GHOSTS, RULES, NOW, facts=facts) is None
    bad = running(
        2, started=timedelta(hours=1), labels={"janitor.lease": "s1", "janitor.max-runtime": "x"}
    )
    action = decide(bad, Task.KILL_GHOSTS, RULES, NOW, facts=facts)
    assert action is not None
    assert action.reason is Reason.BAD_LABEL


def test_a_leased_container_is_a_candidate_once_past_the_lease_grace() -> None:
    leased = running(1, started=timedelta(minutes=2), labels={"janitor.lease": "s1"})
    plain = running(2, started=timedelta(minutes=2))
    assert could_be_eligible(summary_of(leased), Task.KILL_GHOSTS, RULES, NOW)
    assert not could_be_eligible(summary_of(plain), Task.KILL_GHOSTS, RULES, NOW)


def test_renewed_lease_is_not_killed_on_recheck() -> None:
    leased = running(1, started=timedelta(minutes=5), labels={"janitor.lease": "s1"})
    dead = HostFacts(dead_leases=frozenset({"s1"}))
    action = decide(leased, Task.KILL_GHOSTS, RULES, NOW, facts=dead)
    assert action is not None
    assert still_warranted(action, leased, Task.KILL_GHOSTS, RULES, NOW, facts=dead) is None
    renewed = HostFacts()
    assert still_warranted(action, leased, Task.KILL_GHOSTS, RULES, NOW, facts=renewed)


# --- keep-last-N ----------------------------------------------------------------------------


def test_keep_last_keeps_the_newest_per_group_only() -> None:
    rules = replace(RULES, keep_last=2)
    group_a = [
        exited(i, finished=timedelta(hours=i), labels={"janitor.group": "a"}) for i in range(1, 5)
    ]
    group_b = [
        exited(10 + i, finished=timedelta(hours=i), labels={"janitor.group": "b"})
        for i in range(1, 3)
    ]
    loose = [exited(20, finished=timedelta(hours=9))]
    actions = select([*group_a, *group_b, *loose], Task.REMOVE_STOPPED, rules, NOW)
    assert set(reasons(actions)) == {cid(3), cid(4), cid(20)}


def test_keep_last_counts_fresher_uninspected_members() -> None:
    rules = replace(RULES, keep_last=2)
    members = [
        exited(i, finished=timedelta(hours=i), labels={"janitor.group": "a"}) for i in range(1, 4)
    ]
    # One fresher member was not inspected (young), so only one of these is kept.
    facts = HostFacts(fresher_stopped_by_group={"a": 1})
    actions = select(members, Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    assert set(reasons(actions)) == {cid(2), cid(3)}


def test_keep_last_zero_keeps_nothing() -> None:
    members = [
        exited(i, finished=timedelta(hours=i), labels={"janitor.group": "a"}) for i in range(1, 4)
    ]
    assert len(select(members, Task.REMOVE_STOPPED, RULES, NOW)) == 3


# --- the stopped cap --------------------------------------------------------------------------


def test_cap_removes_the_oldest_within_grace_first() -> None:
    rules = replace(RULES, max_stopped=3)
    young = [exited(i, finished=timedelta(minutes=i)) for i in range(1, 6)]  # all within grace
    facts = HostFacts(stopped_in_scope=5)
    actions = select(young, Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    assert reasons(actions) == {cid(5): Reason.OVER_MAX_STOPPED, cid(4): Reason.OVER_MAX_STOPPED}


def test_cap_counts_removals_the_grace_rule_already_makes() -> None:
    rules = replace(RULES, max_stopped=3)
    old = [exited(i, finished=timedelta(hours=i)) for i in range(1, 3)]
    young = [exited(10 + i, finished=timedelta(minutes=i)) for i in range(1, 4)]
    facts = HostFacts(stopped_in_scope=5)
    actions = select([*old, *young], Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    assert reasons(actions) == {cid(1): Reason.EXITED_PAST_GRACE, cid(2): Reason.EXITED_PAST_GRACE}


def test_cap_never_takes_kept_or_protected_containers() -> None:
    rules = replace(RULES, max_stopped=1, keep_last=1)
    kept = exited(1, finished=timedelta(minutes=1), labels={"janitor.group": "a"})
    older_kept_group = exited(2, finished=timedelta(minutes=2), labels={"janitor.group": "a"})
    protected = exited(3, finished=timedelta(minutes=9), labels={"janitor.protect": "true"})
    facts = HostFacts(stopped_in_scope=2)  # the protected one is not in scope
    actions = select(
        [kept, older_kept_group, protected], Task.REMOVE_STOPPED, rules, NOW, facts=facts
    )
    assert reasons(actions) == {cid(2): Reason.OVER_MAX_STOPPED}


def test_over_the_cap_every_stopped_container_is_a_candidate() -> None:
    rules = replace(RULES, max_stopped=2)
    young = [exited(i, finished=timedelta(minutes=1)) for i in range(1, 4)]
    candidates, facts = survey([summary_of(c) for c in young], Task.REMOVE_STOPPED, rules, NOW)
    assert facts.stopped_in_scope == 3
    assert len(candidates) == 3
    under, _ = survey([summary_of(c) for c in young[:2]], Task.REMOVE_STOPPED, rules, NOW)
    assert under == []


def test_cap_removal_stands_on_recheck_unless_the_container_changed() -> None:
    rules = replace(RULES, max_stopped=1)
    young = [exited(i, finished=timedelta(minutes=i)) for i in range(1, 3)]
    facts = HostFacts(stopped_in_scope=2)
    (action,) = select(young, Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    current = young[1]
    assert still_warranted(action, current, Task.REMOVE_STOPPED, rules, NOW, facts=facts) is None
    restarted = replace(
        current, state=State.RUNNING, started_at=NOW, finished_at=current.finished_at
    )
    assert still_warranted(action, restarted, Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    protected = replace(current, labels={**current.labels, "janitor.protect": "true"})
    assert still_warranted(action, protected, Task.REMOVE_STOPPED, rules, NOW, facts=facts)


@settings(max_examples=200, deadline=None)
@given(
    finished_minutes=st.lists(st.integers(0, 600), min_size=1, max_size=12),
    groups=st.lists(st.sampled_from(["a", "b", ""]), min_size=12, max_size=12),
    keep_last=st.integers(0, 4),
    max_stopped=st.integers(0, 10),
)
def test_retention_invariants(
    finished_minutes: list[int], groups: list[str], keep_last: int, max_stopped: int
) -> None:
    rules = replace(RULES, keep_last=keep_last, max_stopped=max_stopped)
    containers = [
        exited(i, finished=timedelta(minutes=m), labels={"janitor.group": g} if g else {})
        for i, (m, g) in enumerate(zip(finished_minutes, groups, strict=False))
    ]
    facts = HostFacts(stopped_in_scope=len(containers))
    actions = select(containers, Task.REMOVE_STOPPED, rules, NOW, facts=facts)
    removed = {a.container_id for a in actions}
    assert len(removed) == len(actions), "never two actions on one container"
    by_id = {c.id: c for c in containers}
    # The newest keep_last of each group survive, whatever the cap.
    for group in ("a", "b"):
        members = sorted(
            (c for c in containers if c.labels.get("janitor.group") == group),
            key=lambda c: c.finished_at or NOW,
            reverse=True,
        )
        assert not {c.id for c in members[:keep_last]} & removed
    kept: set[str] = set()
    for group in ("a", "b"):
        members = sorted(
            (c for c in containers if c.labels.get("janitor.group") == group),
            key=lambda c: c.finished_at or NOW,
            reverse=True,
        )
        kept |= {c.id for c in members[:keep_last]}
    capped = [by_id[a.container_id] for a in actions if a.reason is Reason.OVER_MAX_STOPPED]
    if not max_stopped:
        assert capped == []
        return
    # The cap is met unless the kept containers alone exceed it.
    remaining = len(containers) - len(removed)
    assert remaining <= max(max_stopped, len(kept))
    # Oldest first: nothing the cap spared (and did not keep) finished before one it took.
    spared = [c for c in containers if c.id not in removed and c.id not in kept]
    for taken in capped:
        assert all((c.finished_at or NOW) >= (taken.finished_at or NOW) for c in spared)
