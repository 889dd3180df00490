"""Pure decisions: which containers a sweep kills or removes, and why. No I/O, no clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from janitor.model import (
    Action,
    Container,
    HostFacts,
    Reason,
    Rules,
    State,
    Summary,
    Task,
    Verb,
)
from janitor.vocabulary import (
    COMPOSE_PROJECT_LABEL,
    DURATION_LABELS,
    GROUP_LABEL,
    HOLDER_LABEL,
    LEASE_LABEL,
    MAX_RUNTIME_LABEL,
    PROTECT_LABEL,
    STOPPED_GRACE_LABEL,
    Detail,
    parse_duration,
)

STOPPED_STATES = frozenset({State.EXITED, State.DEAD})
_EXPLICIT_NO = frozenset({"false", "0", "no", "off"})
_EXPLICIT_YES = frozenset({"true", "1", "yes", "on"})
NO_FACTS = HostFacts()


def is_protected(labels: Mapping[str, str]) -> bool:
    """Whether the protection label is set to anything but an explicit no.

    Fail-safe: `janitor.protect=yes` or a typo protects; only false/0/no/off do not.
    """
    if PROTECT_LABEL not in labels:
        return False
    return labels[PROTECT_LABEL].strip().lower() not in _EXPLICIT_NO


def is_marked_holder(labels: Mapping[str, str]) -> bool:
    """Whether the container is a project's namespace holder (`janitor.holder=true`).

    Only an explicit yes: the mark takes the runtime budget away but reaps the container
    after a short grace once orphaned, so a typo must leave it an ordinary container.
    """
    return labels.get(HOLDER_LABEL, "").strip().lower() in _EXPLICIT_YES


def is_in_scope(container: Summary | Container, rules: Rules) -> bool:
    """Managed by the selector, and neither protected nor one of the janitor's own."""
    labels = container.labels
    return (
        rules.selector.matches(labels)
        and not is_protected(labels)
        and container.id not in rules.own_container_ids
        and labels.get(COMPOSE_PROJECT_LABEL) not in rules.own_compose_projects
    )


def _label_duration(labels: Mapping[str, str], key: str, default: timedelta) -> timedelta | None:
    """The label's duration, the default when absent, None when unparseable."""
    if key not in labels:
        return default
    try:
        return parse_duration(labels[key])
    except ValueError:
        return None


def _budget(container: Summary | Container, task: Task, rules: Rules) -> timedelta | None:
    """The container's budget for this task; None when any duration label is unparseable,
    which makes the container ineligible for every task, not only the one the label is for."""
    labels = container.labels
    if any(_label_duration(labels, key, timedelta(0)) is None for key in DURATION_LABELS):
        return None
    if task is Task.KILL_GHOSTS:
        return _label_duration(labels, MAX_RUNTIME_LABEL, rules.max_runtime)
    if container.state == State.CREATED:
        return rules.created_grace
    return _label_duration(labels, STOPPED_GRACE_LABEL, rules.stopped_grace)


def _states_for(task: Task) -> frozenset[str]:
    if task is Task.KILL_GHOSTS:
        return frozenset({State.RUNNING})
    return STOPPED_STATES | {State.CREATED}


def _is_over_cap(summary: Summary, rules: Rules, facts: HostFacts) -> bool:
    return (
        0 < rules.max_stopped < facts.stopped_in_scope
        and summary.state in STOPPED_STATES
        and is_in_scope(summary, rules)
    )


def could_be_eligible(
    summary: Summary, task: Task, rules: Rules, now: datetime, *, facts: HostFacts = NO_FACTS
) -> bool:
    """Whether a listed container is worth inspecting for this task.

    Every age the policy measures (from start, finish or creation) is no older than the
    creation time the list call gives, so a container created within its budget cannot be
    eligible yet; skipping it keeps an idle sweep at one list call. Over the stopped cap,
    every stopped container is a candidate: the oldest must be found.
    """
    if summary.state not in _states_for(task) or not is_in_scope(summary, rules):
        return False
    if task is Task.REMOVE_STOPPED and _is_over_cap(summary, rules, facts):
        return True
    if task is Task.KILL_GHOSTS and is_marked_holder(summary.labels):
        # Its orphan record is refreshed by every ghost sweep, so it is always looked at.
        return True
    budget = _budget(summary, task, rules)
    if budget is None:
        return True
    if task is Task.KILL_GHOSTS and LEASE_LABEL in summary.labels:
        budget = min(budget, rules.lease_grace)
    return now - summary.created_at > budget


def survey(
    summaries: Iterable[Summary], task: Task, rules: Rules, now: datetime
) -> tuple[list[Summary], HostFacts]:
    """From one list call: the containers worth inspecting, and what the decision needs to
    know about the others (owner leases are looked up later, for the candidates only)."""
    listed = list(summaries)
    stopped = [s for s in listed if s.state in STOPPED_STATES and is_in_scope(s, rules)]
    counts = HostFacts(stopped_in_scope=len(stopped))
    candidates = [s for s in listed if could_be_eligible(s, task, rules, now, facts=counts)]
    if task is Task.REMOVE_STOPPED and rules.keep_last > 0:
        candidates += _members_to_rank(stopped, candidates, rules)
    chosen = {s.id for s in candidates}
    fresher = Counter(
        group for s in stopped if s.id not in chosen and (group := s.labels.get(GROUP_LABEL))
    )
    return candidates, HostFacts(stopped_in_scope=len(stopped), fresher_stopped_by_group=fresher)


def _members_to_rank(
    stopped: list[Summary], candidates: list[Summary], rules: Rules
) -> list[Summary]:
    """Group members left out of the candidates that keep-last-N must still rank by finish
    time, which only inspect tells.

    A member created within its grace finished after every candidate that is past a grace no
    longer than its own, so it is counted as fresher without an inspect. One with a longer
    grace (a `janitor.stopped-grace` label, or a label that shortens the others') may have
    finished before such a candidate: counting it as fresher would remove a newer one.
    """
    shortest: dict[str, timedelta] = {}
    for summary in candidates:
        group = summary.labels.get(GROUP_LABEL)
        budget = _budget(summary, Task.REMOVE_STOPPED, rules)
        if group and summary.state in STOPPED_STATES and budget is not None:
            shortest[group] = min(budget, shortest.get(group, budget))
    chosen = {s.id for s in candidates}
    return [
        s
        for s in stopped
        if s.id not in chosen
        and (group := s.labels.get(GROUP_LABEL)) in shortest
        and (budget := _budget(s, Task.REMOVE_STOPPED, rules)) is not None
        and budget > shortest[group]
    ]


def lease_keys(containers: Iterable[Container]) -> frozenset[str]:
    """The owner-lease keys of running containers, to look up before deciding."""
    return frozenset(
        key for c in containers if c.state == State.RUNNING and (key := c.labels.get(LEASE_LABEL))
    )


def decide(
    container: Container, task: Task, rules: Rules, now: datetime, *, facts: HostFacts = NO_FACTS
) -> Action | None:
    """The action this task takes on one inspected container, or None to leave it alone.

    Retention across containers (keep-last-N, the stopped cap) is `select`'s business.
    """
    if container.state not in _states_for(task) or not is_in_scope(container, rules):
        return None
    if task is Task.REMOVE_STOPPED and container.auto_remove:
        return None  # the daemon removes it itself once it stops
    budget = _budget(container, task, rules)
    if task is Task.KILL_GHOSTS:
        verb, reason, since = Verb.KILL, Reason.OVER_RUNTIME_BUDGET, container.started_at
        if budget is not None and is_marked_holder(container.labels):
            # No runtime budget of its own: it lives as long as its project does.
            reason, budget = Reason.HOLDER_ORPHANED, rules.holder_grace
            since = (facts.orphaned_since or {}).get(container.id)
        if budget is not None and _owner_gone(container, rules, now, facts):
            reason, budget = Reason.OWNER_LEASE_EXPIRED, timedelta(0)
    elif container.state == State.CREATED:
        # A created container that was started once and reset is not "never started".
        if container.started_at is not None:
            return None
        verb, reason, since = Verb.REMOVE, Reason.CREATED_NEVER_STARTED, container.created_at
    elif is_dead_of_unknown_age(container):
        verb, reason = Verb.REMOVE, Reason.DEAD_PAST_GRACE
        since, budget = _dead_since(container, rules, facts, budget)
    else:
        verb, reason, since = Verb.REMOVE, Reason.EXITED_PAST_GRACE, container.finished_at
    if budget is None:
        reason = Reason.BAD_LABEL
    elif since is None or now - since <= budget:
        return None
    return _action(container, verb, reason)


def is_dead_of_unknown_age(container: Container) -> bool:
    """Dead with a zero FinishedAt, as a removal cut off by a daemon restart leaves it."""
    return container.state == State.DEAD and container.finished_at is None


def _dead_since(
    container: Container, rules: Rules, facts: HostFacts, budget: timedelta | None
) -> tuple[datetime | None, timedelta | None]:
    """The instant and grace a dead container of unknown age is measured by.

    The named exception to "unknown is never old": its finish is unknown, but when the
    janitor first saw it dead is known, and the stopped grace counts from then. Without that
    record (no Redis), from its creation with the longer of the two graces.
    """
    if facts.first_seen_dead is None:
        longer = None if budget is None else max(budget, rules.created_grace)
        return container.created_at, longer
    return facts.first_seen_dead.get(container.id), budget


def _owner_gone(container: Container, rules: Rules, now: datetime, facts: HostFacts) -> bool:
    """The owner stopped renewing the container's lease, and the container has run past the
    lease grace (a lease missing right after start is a lease not yet made)."""
    key = container.labels.get(LEASE_LABEL)
    return (
        key is not None
        and key in facts.dead_leases
        and container.started_at is not None
        and now - container.started_at > rules.lease_grace
    )


def _action(container: Container, verb: Verb, reason: Reason) -> Action:
    return Action(
        container_id=container.id,
        name=container.name,
        verb=verb,
        reason=reason,
        seen_started_at=container.started_at,
        seen_finished_at=container.finished_at,
    )


def select(
    containers: Iterable[Container],
    task: Task,
    rules: Rules,
    now: datetime,
    *,
    facts: HostFacts = NO_FACTS,
) -> list[Action]:
    """Every action of one sweep, bad labels included (reported, never acted on).

    For removal, the newest `keep_last` stopped containers of each janitor.group are kept
    whatever their age, and past `max_stopped` the oldest stopped ones go even within grace.
    """
    inspected = list(containers)
    actions = [
        action
        for container in inspected
        if (action := decide(container, task, rules, now, facts=facts)) is not None
    ]
    if task is not Task.REMOVE_STOPPED:
        return actions
    kept = _kept_for_debugging(inspected, rules, facts)
    actions = [a for a in actions if a.container_id not in kept or not a.actionable]
    return actions + _over_cap(inspected, actions, kept, rules, facts)


def _finished_newest_first(containers: Iterable[Container]) -> list[Container]:
    return sorted(
        (c for c in containers if c.finished_at is not None),
        key=lambda c: c.finished_at or datetime.min,
        reverse=True,
    )


def _is_removable_stopped(container: Container, rules: Rules) -> bool:
    return (
        container.state in STOPPED_STATES
        and is_in_scope(container, rules)
        and not container.auto_remove
        and _budget(container, Task.REMOVE_STOPPED, rules) is not None
    )


def _kept_for_debugging(
    containers: list[Container], rules: Rules, facts: HostFacts
) -> frozenset[str]:
    if rules.keep_last <= 0:
        return frozenset()
    groups: dict[str, list[Container]] = {}
    for container in containers:
        group = container.labels.get(GROUP_LABEL)
        if group and _is_removable_stopped(container, rules):
            groups.setdefault(group, []).append(container)
    kept: set[str] = set()
    for group, members in groups.items():
        room = max(0, rules.keep_last - facts.fresher_stopped_by_group.get(group, 0))
        kept.update(c.id for c in _finished_newest_first(members)[:room])
    return frozenset(kept)


def _over_cap(
    containers: list[Container],
    actions: list[Action],
    kept: frozenset[str],
    rules: Rules,
    facts: HostFacts,
) -> list[Action]:
    """Removals beyond the grace rule that bring the host down to `max_stopped`."""
    if not 0 < rules.max_stopped < facts.stopped_in_scope:
        return []
    chosen = {a.container_id for a in actions}
    already_going = sum(1 for c in containers if c.id in chosen and c.state in STOPPED_STATES)
    excess = facts.stopped_in_scope - rules.max_stopped - already_going
    if excess <= 0:
        return []
    spare = [
        c
        for c in containers
        if c.id not in chosen and c.id not in kept and _is_removable_stopped(c, rules)
    ]
    oldest_first = list(reversed(_finished_newest_first(spare)))
    return [_action(c, Verb.REMOVE, Reason.OVER_MAX_STOPPED) for c in oldest_first[:excess]]


def select_ghosts(containers: Iterable[Container], rules: Rules, now: datetime) -> list[Action]:
    return select(containers, Task.KILL_GHOSTS, rules, now)


def select_stopped(containers: Iterable[Container], rules: Rules, now: datetime) -> list[Action]:
    return select(containers, Task.REMOVE_STOPPED, rules, now)


def still_warranted(
    action: Action,
    current: Container,
    task: Task,
    rules: Rules,
    now: datetime,
    *,
    facts: HostFacts = NO_FACTS,
) -> str | None:
    """Why the action must not go ahead on the container as it is now, or None if it may.

    The decision is taken again on a fresh inspect: a container restarted, started,
    stopped, relabelled or protected since is left alone.
    """
    if current.started_at != action.seen_started_at:
        return Detail.RESTARTED_SINCE_DECISION
    if current.finished_at != action.seen_finished_at:
        return Detail.RAN_SINCE_DECISION
    if action.reason is Reason.OVER_MAX_STOPPED:
        # Chosen by rank among all stopped containers, not by its own age: what can change
        # is its state or scope, and the rank of a container that did not change holds.
        return None if _is_removable_stopped(current, rules) else Detail.NO_LONGER_ELIGIBLE
    fresh = decide(current, task, rules, now, facts=facts)
    # A bad_label action is reported, never carried out, whoever asks.
    if fresh is None or not fresh.actionable:
        return Detail.NO_LONGER_ELIGIBLE
    if fresh.verb is not action.verb or fresh.reason is not action.reason:
        return Detail.NO_LONGER_ELIGIBLE
    return None
