"""The policy as tables of plain data at a fixed NOW, and its invariants as properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
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
    Verb,
)
from janitor.policy import (
    could_be_eligible,
    decide,
    is_in_scope,
    select,
    select_ghosts,
    select_stopped,
    still_warranted,
)
from janitor.vocabulary import parse_duration

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
KILL = Task.KILL_GHOSTS
REMOVE = Task.REMOVE_STOPPED

OWN_ID = "f" * 64
OTHER_ID = "a" * 64
MANAGED = {"janitor.managed": "true"}
PROTECT = "janitor.protect"
MAX_RUNTIME = "janitor.max-runtime"
STOPPED_GRACE = "janitor.stopped-grace"
COMPOSE = "com.docker.compose.project"

DEFAULT_SELECTOR = Selector("janitor.managed", "true")
RULES = Rules(
    selector=DEFAULT_SELECTOR,
    max_runtime=timedelta(hours=2),
    stopped_grace=timedelta(minutes=10),
    created_grace=timedelta(hours=1),
    own_container_ids=frozenset({OWN_ID}),
    own_compose_projects=frozenset({"janitor"}),
)

KILL_OVER = (Verb.KILL, Reason.OVER_RUNTIME_BUDGET)
REMOVE_EXITED = (Verb.REMOVE, Reason.EXITED_PAST_GRACE)
REMOVE_CREATED = (Verb.REMOVE, Reason.CREATED_NEVER_STARTED)
KILL_BAD = (Verb.KILL, Reason.BAD_LABEL)
REMOVE_BAD = (Verb.REMOVE, Reason.BAD_LABEL)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


def make(
    state: State | str,
    *,
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
    created: datetime | None = None,
    started: datetime | None = None,
    finished: datetime | None = None,
    auto_remove: bool = False,
    container_id: str = OTHER_ID,
) -> Container:
    """A container in `state`, managed by default, created a day ago."""
    return Container(
        id=container_id,
        name="c",
        state=state,
        labels={**(MANAGED if labels is None else labels), **(extra or {})},
        created_at=ago(days=1) if created is None else created,
        started_at=started,
        finished_at=finished,
        auto_remove=auto_remove,
    )


def ghost(**kwargs: Any) -> Container:
    """A running container three hours into a two-hour budget."""
    return make(State.RUNNING, started=ago(hours=3), **kwargs)


def exited(**kwargs: Any) -> Container:
    """An exited container one hour into a ten-minute grace."""
    return make(State.EXITED, started=ago(hours=5), finished=ago(hours=1), **kwargs)


def summary_of(container: Container, created_at: datetime | None = None) -> Summary:
    created = created_at if created_at is not None else container.created_at
    assert created is not None
    return Summary(
        id=container.id,
        name=container.name,
        state=container.state,
        labels=container.labels,
        created_at=created,
    )


def verdict(action: Action | None) -> tuple[Verb, Reason] | None:
    return None if action is None else (action.verb, action.reason)


def is_actionable(action: Action | None) -> bool:
    return action is not None and action.actionable


# --- decide ------------------------------------------------------------------------------------

DECIDE_CASES = [
    # kill-ghosts: the runtime budget
    pytest.param(ghost(), KILL, KILL_OVER, id="running-over-budget"),
    pytest.param(make(State.RUNNING, started=ago(hours=1)), KILL, None, id="running-under-budget"),
    pytest.param(make(State.RUNNING, started=ago(hours=2)), KILL, None, id="running-at-budget"),
    pytest.param(
        make(State.RUNNING, started=ago(hours=2, seconds=1)), KILL, KILL_OVER, id="just-over"
    ),
    pytest.param(
        make(State.RUNNING, started=ago(hours=1), extra={MAX_RUNTIME: "30m"}),
        KILL,
        KILL_OVER,
        id="label-shorter-budget-makes-eligible",
    ),
    pytest.param(
        make(State.RUNNING, started=ago(hours=1), extra={MAX_RUNTIME: "PT30M"}),
        KILL,
        KILL_OVER,
        id="label-iso-budget",
    ),
    pytest.param(ghost(extra={MAX_RUNTIME: "4h"}), KILL, None, id="label-longer-budget-spares"),
    pytest.param(ghost(extra={MAX_RUNTIME: "banana"}), KILL, KILL_BAD, id="label-bad-max-runtime"),
    pytest.param(
        make(State.RUNNING, started=ago(minutes=1), extra={MAX_RUNTIME: "banana"}),
        KILL,
        KILL_BAD,
        id="label-bad-reported-even-when-young",
    ),
    pytest.param(ghost(extra={MAX_RUNTIME: ""}), KILL, KILL_BAD, id="label-empty-max-runtime"),
    pytest.param(
        # Any unparseable duration label makes the container ineligible for every task.
        ghost(extra={STOPPED_GRACE: "banana"}),
        KILL,
        KILL_BAD,
        id="bad-stopped-grace-blocks-kill-too",
    ),
    pytest.param(make(State.RUNNING, started=None), KILL, None, id="running-zero-started-at"),
    pytest.param(ghost(auto_remove=True), KILL, KILL_OVER, id="auto-remove-ghost-still-killed"),
    pytest.param(make(State.PAUSED, started=ago(hours=3)), KILL, None, id="paused"),
    pytest.param(make(State.RESTARTING, started=ago(hours=3)), KILL, None, id="restarting"),
    pytest.param(make(State.REMOVING, started=ago(hours=3)), KILL, None, id="removing"),
    pytest.param(exited(), KILL, None, id="exited-not-a-ghost"),
    pytest.param(make(State.CREATED), KILL, None, id="created-not-a-ghost"),
    pytest.param(make("some-future-state", started=ago(hours=3)), KILL, None, id="unknown-state"),
    pytest.param(ghost(extra={PROTECT: "true"}), KILL, None, id="protected"),
    pytest.param(ghost(extra={PROTECT: "TRUE"}), KILL, None, id="protected-upper-case"),
    pytest.param(ghost(extra={PROTECT: " True "}), KILL, None, id="protected-padded"),
    pytest.param(ghost(extra={PROTECT: "false"}), KILL, KILL_OVER, id="protect-false"),
    pytest.param(ghost(labels={}), KILL, None, id="unmanaged"),
    pytest.param(ghost(labels={"janitor.managed": "false"}), KILL, None, id="managed-false"),
    pytest.param(ghost(container_id=OWN_ID), KILL, None, id="own-container"),
    pytest.param(ghost(extra={COMPOSE: "janitor"}), KILL, None, id="own-compose-project"),
    pytest.param(ghost(extra={COMPOSE: "app"}), KILL, KILL_OVER, id="other-compose-project"),
    # remove-stopped: exited and dead past the grace
    pytest.param(exited(), REMOVE, REMOVE_EXITED, id="exited-past-grace"),
    pytest.param(
        make(State.EXITED, started=ago(hours=1), finished=ago(minutes=5)),
        REMOVE,
        None,
        id="exited-within-grace",
    ),
    pytest.param(
        make(State.EXITED, started=ago(hours=1), finished=ago(minutes=10)),
        REMOVE,
        None,
        id="exited-at-grace",
    ),
    pytest.param(
        make(State.DEAD, started=ago(hours=5), finished=ago(hours=1)),
        REMOVE,
        REMOVE_EXITED,
        id="dead-past-grace",
    ),
    pytest.param(
        make(State.DEAD, started=ago(hours=1), finished=ago(minutes=5)),
        REMOVE,
        None,
        id="dead-within-grace",
    ),
    pytest.param(
        make(State.EXITED, started=ago(hours=5), finished=None),
        REMOVE,
        None,
        id="exited-zero-finished-at",
    ),
    pytest.param(
        make(State.EXITED, started=None, finished=None),
        REMOVE,
        None,
        id="exited-zero-everything",
    ),
    pytest.param(
        make(
            State.EXITED, started=ago(hours=1), finished=ago(minutes=5), extra={STOPPED_GRACE: "1m"}
        ),
        REMOVE,
        REMOVE_EXITED,
        id="label-shorter-grace-makes-eligible",
    ),
    pytest.param(exited(extra={STOPPED_GRACE: "1d"}), REMOVE, None, id="label-longer-grace-spares"),
    pytest.param(exited(extra={STOPPED_GRACE: "banana"}), REMOVE, REMOVE_BAD, id="label-bad-grace"),
    pytest.param(exited(auto_remove=True), REMOVE, None, id="auto-remove-exempt-from-removal"),
    pytest.param(exited(extra={PROTECT: "true"}), REMOVE, None, id="exited-protected"),
    pytest.param(exited(labels={}), REMOVE, None, id="exited-unmanaged"),
    pytest.param(exited(container_id=OWN_ID), REMOVE, None, id="exited-own-container"),
    pytest.param(exited(extra={COMPOSE: "janitor"}), REMOVE, None, id="exited-own-project"),
    pytest.param(ghost(), REMOVE, None, id="running-never-removed"),
    pytest.param(make(State.PAUSED, started=ago(hours=3)), REMOVE, None, id="paused-not-removed"),
    pytest.param(
        make(State.RESTARTING, started=ago(hours=3), finished=ago(hours=2)),
        REMOVE,
        None,
        id="restarting-not-removed",
    ),
    pytest.param(
        make(State.REMOVING, started=ago(hours=3), finished=ago(hours=2)),
        REMOVE,
        None,
        id="removing-not-removed",
    ),
    # remove-stopped: created, never started, past the created grace
    pytest.param(
        make(State.CREATED, created=ago(hours=2)), REMOVE, REMOVE_CREATED, id="created-past-grace"
    ),
    pytest.param(make(State.CREATED, created=ago(minutes=30)), REMOVE, None, id="created-within"),
    pytest.param(make(State.CREATED, created=ago(hours=1)), REMOVE, None, id="created-at-grace"),
    pytest.param(
        Container(
            id=OTHER_ID,
            name="c",
            state=State.CREATED,
            labels=MANAGED,
            created_at=None,
            started_at=None,
            finished_at=None,
        ),
        REMOVE,
        None,
        id="created-zero-created-at",
    ),
    pytest.param(
        make(State.CREATED, created=ago(hours=5), started=ago(hours=4), finished=ago(hours=3)),
        REMOVE,
        None,
        id="created-but-started-once",
    ),
    pytest.param(
        make(State.CREATED, created=ago(hours=2), extra={STOPPED_GRACE: "1d"}),
        REMOVE,
        REMOVE_CREATED,
        id="created-ignores-stopped-grace-label",
    ),
    pytest.param(
        make(State.CREATED, created=ago(hours=2), extra={PROTECT: "true"}),
        REMOVE,
        None,
        id="created-protected",
    ),
    pytest.param(
        make(State.CREATED, created=ago(hours=2), auto_remove=True),
        REMOVE,
        None,
        id="created-auto-remove",
    ),
]


@pytest.mark.parametrize(("container", "task", "expected"), DECIDE_CASES)
def test_decide(container: Container, task: Task, expected: tuple[Verb, Reason] | None) -> None:
    action = decide(container, task, RULES, NOW)
    assert verdict(action) == expected
    if action is not None:
        assert action.container_id == container.id
        assert action.name == container.name
        assert action.seen_started_at == container.started_at
        assert action.seen_finished_at == container.finished_at
        assert action.actionable is (action.reason is not Reason.BAD_LABEL)


@pytest.mark.parametrize(
    ("container", "task", "expected"),
    # The list call always gives a creation time; the one case without it has nothing to list.
    [case for case in DECIDE_CASES if case.values[0].created_at is not None],
)
def test_could_be_eligible_never_rules_out_a_decided_container(
    container: Container, task: Task, expected: tuple[Verb, Reason] | None
) -> None:
    assert (decide(container, task, RULES, NOW) is not None) is (expected is not None)
    if expected is not None:
        assert could_be_eligible(summary_of(container), task, RULES, NOW)
    # Created exactly when it started (or finished): the list's age equals decide's age.
    for since in (container.started_at, container.finished_at):
        if since is not None and expected is not None:
            assert could_be_eligible(summary_of(container, created_at=since), task, RULES, NOW)


def test_bad_label_action_is_not_actionable() -> None:
    action = decide(ghost(extra={MAX_RUNTIME: "banana"}), KILL, RULES, NOW)
    assert action is not None
    assert action.reason is Reason.BAD_LABEL
    assert not action.actionable
    assert Reason.BAD_LABEL.value == "bad_label"


# --- the selectors: protected, unmanaged and own containers under each ------------------------

SELECTORS = {
    "managed=true": Selector("janitor.managed", "true"),
    "managed-key-only": Selector("janitor.managed"),
    "team=ide": Selector("team", "ide"),
    "everything": Selector(None),
}
MATCHING_LABELS = {
    "managed=true": {"janitor.managed": "true"},
    "managed-key-only": {"janitor.managed": ""},
    "team=ide": {"team": "ide"},
    "everything": {},
}
NOT_MATCHING_LABELS = {
    "managed=true": [
        {},
        {"janitor.managed": "false"},
        {"janitor.managed": "TRUE"},
        {"team": "ide"},
    ],
    "managed-key-only": [{}, {"janitor.managedx": "true"}, {"team": "ide"}],
    "team=ide": [{}, {"team": "ops"}, {"team": "IDE"}, {"janitor.managed": "true"}],
    "everything": [],
}


def rules_with(selector: Selector) -> Rules:
    return replace(RULES, selector=selector)


def candidates(labels: Mapping[str, str], container_id: str = OTHER_ID) -> list[Container]:
    """One container per way to be eligible, all carrying `labels`."""
    return [
        ghost(labels=labels, container_id=container_id),
        exited(labels=labels, container_id=container_id),
        make(State.CREATED, labels=labels, created=ago(hours=2), container_id=container_id),
    ]


def selected(containers: list[Container], rules: Rules) -> list[Action]:
    return select(containers, KILL, rules, NOW) + select(containers, REMOVE, rules, NOW)


@pytest.mark.parametrize("name", SELECTORS)
def test_matching_containers_are_selected(name: str) -> None:
    rules = rules_with(SELECTORS[name])
    actions = selected(candidates(MATCHING_LABELS[name]), rules)
    assert [verdict(a) for a in actions] == [KILL_OVER, REMOVE_EXITED, REMOVE_CREATED]


@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("protect", ["true", "TRUE", "True", " true"])
def test_protected_never_selected(name: str, protect: str) -> None:
    labels = {**MATCHING_LABELS[name], PROTECT: protect}
    rules = rules_with(SELECTORS[name])
    assert selected(candidates(labels), rules) == []
    assert not is_in_scope(ghost(labels=labels), rules)


@pytest.mark.parametrize(
    ("name", "labels"),
    [(name, labels) for name, many in NOT_MATCHING_LABELS.items() for labels in many],
)
def test_unmanaged_never_selected(name: str, labels: Mapping[str, str]) -> None:
    rules = rules_with(SELECTORS[name])
    assert selected(candidates(labels), rules) == []
    assert not is_in_scope(ghost(labels=labels), rules)


@pytest.mark.parametrize("name", SELECTORS)
def test_own_container_id_exempt(name: str) -> None:
    rules = rules_with(SELECTORS[name])
    assert selected(candidates(MATCHING_LABELS[name], container_id=OWN_ID), rules) == []


@pytest.mark.parametrize("name", SELECTORS)
def test_own_compose_project_exempt(name: str) -> None:
    rules = rules_with(SELECTORS[name])
    labels = {**MATCHING_LABELS[name], COMPOSE: "janitor"}
    assert selected(candidates(labels), rules) == []


def test_key_only_selector_matches_any_value() -> None:
    # The contract's `key` selector is presence of the label, whatever its value.
    rules = rules_with(Selector("janitor.managed"))
    assert is_in_scope(ghost(labels={"janitor.managed": "false"}), rules)


# --- is_in_scope -------------------------------------------------------------------------------

SCOPE_CASES = [
    pytest.param(MANAGED, OTHER_ID, DEFAULT_SELECTOR, True, id="managed"),
    pytest.param({}, OTHER_ID, DEFAULT_SELECTOR, False, id="no-labels"),
    pytest.param({**MANAGED, PROTECT: "true"}, OTHER_ID, DEFAULT_SELECTOR, False, id="protected"),
    pytest.param({**MANAGED, PROTECT: "yes"}, OTHER_ID, DEFAULT_SELECTOR, False, id="protect-yes"),
    pytest.param({**MANAGED, PROTECT: "no"}, OTHER_ID, DEFAULT_SELECTOR, True, id="protect-no"),
    pytest.param({**MANAGED, PROTECT: "0"}, OTHER_ID, DEFAULT_SELECTOR, True, id="protect-0"),
    pytest.param(MANAGED, OWN_ID, DEFAULT_SELECTOR, False, id="own-id"),
    pytest.param({**MANAGED, COMPOSE: "janitor"}, OTHER_ID, DEFAULT_SELECTOR, False, id="own-proj"),
    pytest.param({}, OTHER_ID, Selector(None), True, id="star-no-labels"),
    pytest.param({PROTECT: "true"}, OTHER_ID, Selector(None), False, id="star-protected"),
    pytest.param({}, OWN_ID, Selector(None), False, id="star-own-id"),
    pytest.param({COMPOSE: "janitor"}, OTHER_ID, Selector(None), False, id="star-own-project"),
    pytest.param({COMPOSE: "other"}, OTHER_ID, Selector(None), True, id="star-other-project"),
]


@pytest.mark.parametrize(("labels", "container_id", "selector", "expected"), SCOPE_CASES)
def test_is_in_scope(
    labels: Mapping[str, str], container_id: str, selector: Selector, expected: bool
) -> None:
    rules = rules_with(selector)
    container = ghost(labels=labels, container_id=container_id)
    assert is_in_scope(container, rules) is expected
    assert is_in_scope(summary_of(container), rules) is expected


# --- select --------------------------------------------------------------------------------------


def test_select_one_snapshot() -> None:
    snapshot = [
        ghost(container_id="1" * 64),
        make(State.RUNNING, started=ago(minutes=5), container_id="2" * 64),
        ghost(extra={MAX_RUNTIME: "banana"}, container_id="3" * 64),
        exited(container_id="4" * 64),
        make(State.CREATED, created=ago(hours=3), container_id="5" * 64),
        ghost(extra={PROTECT: "true"}, container_id="6" * 64),
        make(State.PAUSED, started=ago(hours=9), container_id="7" * 64),
        exited(extra={STOPPED_GRACE: "nope"}, container_id="8" * 64),
    ]
    ghosts = [(a.container_id[0], a.verb, a.reason) for a in select(snapshot, KILL, RULES, NOW)]
    stopped = [(a.container_id[0], a.verb, a.reason) for a in select(snapshot, REMOVE, RULES, NOW)]
    assert ghosts == [("1", *KILL_OVER), ("3", *KILL_BAD)]
    assert stopped == [("4", *REMOVE_EXITED), ("5", *REMOVE_CREATED), ("8", *REMOVE_BAD)]
    assert select_ghosts(snapshot, RULES, NOW) == select(snapshot, KILL, RULES, NOW)
    assert select_stopped(snapshot, RULES, NOW) == select(snapshot, REMOVE, RULES, NOW)
    assert select([], KILL, RULES, NOW) == []


def test_select_accepts_a_generator() -> None:
    assert len(select((c for c in [ghost(), ghost()]), KILL, RULES, NOW)) == 2


# --- could_be_eligible ---------------------------------------------------------------------------


def listed(
    state: State | str,
    created: datetime,
    labels: Mapping[str, str] | None = None,
    container_id: str = OTHER_ID,
) -> Summary:
    return Summary(
        id=container_id,
        name="c",
        state=state,
        labels=MANAGED if labels is None else labels,
        created_at=created,
    )


COULD_CASES = [
    pytest.param(listed(State.RUNNING, ago(hours=3)), KILL, True, id="running-old"),
    pytest.param(listed("running", ago(hours=3)), KILL, True, id="running-as-plain-string"),
    pytest.param(listed(State.RUNNING, ago(hours=1)), KILL, False, id="running-young"),
    pytest.param(listed(State.RUNNING, ago(hours=2)), KILL, False, id="running-at-budget"),
    pytest.param(
        listed(State.RUNNING, ago(hours=1), {**MANAGED, MAX_RUNTIME: "30m"}),
        KILL,
        True,
        id="label-shorter",
    ),
    pytest.param(
        listed(State.RUNNING, ago(hours=3), {**MANAGED, MAX_RUNTIME: "4h"}),
        KILL,
        False,
        id="label-longer",
    ),
    pytest.param(
        listed(State.RUNNING, ago(minutes=1), {**MANAGED, MAX_RUNTIME: "banana"}),
        KILL,
        True,
        id="bad-label-inspected-to-report",
    ),
    pytest.param(listed(State.PAUSED, ago(hours=3)), KILL, False, id="paused"),
    pytest.param(listed(State.RESTARTING, ago(hours=3)), KILL, False, id="restarting"),
    pytest.param(listed(State.EXITED, ago(hours=3)), KILL, False, id="exited-for-kill"),
    pytest.param(
        listed(State.RUNNING, ago(hours=3), {**MANAGED, PROTECT: "TRUE"}),
        KILL,
        False,
        id="protected",
    ),
    pytest.param(listed(State.RUNNING, ago(hours=3), {}), KILL, False, id="unmanaged"),
    pytest.param(
        listed(State.RUNNING, ago(hours=3), container_id=OWN_ID), KILL, False, id="own-id"
    ),
    pytest.param(listed(State.EXITED, ago(hours=1)), REMOVE, True, id="exited-old"),
    pytest.param(listed(State.DEAD, ago(hours=1)), REMOVE, True, id="dead-old"),
    pytest.param(listed(State.EXITED, ago(minutes=5)), REMOVE, False, id="exited-young"),
    pytest.param(
        listed(State.EXITED, ago(minutes=5), {**MANAGED, STOPPED_GRACE: "1m"}),
        REMOVE,
        True,
        id="grace-label-shorter",
    ),
    pytest.param(
        listed(State.EXITED, ago(hours=1), {**MANAGED, STOPPED_GRACE: "1d"}),
        REMOVE,
        False,
        id="grace-label-longer",
    ),
    pytest.param(
        listed(State.EXITED, ago(minutes=1), {**MANAGED, STOPPED_GRACE: "x"}),
        REMOVE,
        True,
        id="grace-label-bad",
    ),
    pytest.param(listed(State.CREATED, ago(hours=2)), REMOVE, True, id="created-old"),
    pytest.param(listed(State.CREATED, ago(minutes=30)), REMOVE, False, id="created-young"),
    pytest.param(listed(State.RUNNING, ago(hours=3)), REMOVE, False, id="running-for-remove"),
    pytest.param(listed(State.REMOVING, ago(hours=3)), REMOVE, False, id="removing"),
]


@pytest.mark.parametrize(("summary", "task", "expected"), COULD_CASES)
def test_could_be_eligible(summary: Summary, task: Task, expected: bool) -> None:
    assert could_be_eligible(summary, task, RULES, NOW) is expected


# --- still_warranted -----------------------------------------------------------------------------

GHOST = ghost()
EXITED = exited()
NEVER_STARTED = make(State.CREATED, created=ago(hours=2))

WARRANTED_CASES = [
    pytest.param(GHOST, KILL, GHOST, False, id="ghost-unchanged"),
    pytest.param(GHOST, KILL, replace(GHOST, name="renamed"), False, id="ghost-renamed"),
    pytest.param(
        GHOST, KILL, replace(GHOST, started_at=ago(minutes=1)), True, id="ghost-restarted"
    ),
    pytest.param(
        GHOST,
        KILL,
        replace(GHOST, started_at=ago(hours=2, minutes=30), finished_at=ago(hours=2, minutes=31)),
        True,
        id="ghost-restarted-still-over-budget",
    ),
    pytest.param(
        GHOST,
        KILL,
        replace(GHOST, state=State.EXITED, finished_at=ago(seconds=1)),
        True,
        id="ghost-gone-to-exited",
    ),
    pytest.param(GHOST, KILL, replace(GHOST, state=State.PAUSED), True, id="ghost-paused"),
    pytest.param(GHOST, KILL, replace(GHOST, state=State.REMOVING), True, id="ghost-removing"),
    pytest.param(
        GHOST,
        KILL,
        replace(GHOST, labels={**MANAGED, PROTECT: "true"}),
        True,
        id="ghost-protected-since",
    ),
    pytest.param(GHOST, KILL, replace(GHOST, labels={}), True, id="ghost-unmanaged-since"),
    pytest.param(
        GHOST,
        KILL,
        replace(GHOST, labels={**MANAGED, MAX_RUNTIME: "1d"}),
        True,
        id="ghost-relabelled-longer",
    ),
    pytest.param(
        GHOST,
        KILL,
        replace(GHOST, labels={**MANAGED, MAX_RUNTIME: "banana"}),
        True,
        id="ghost-relabelled-bad",
    ),
    pytest.param(GHOST, KILL, replace(GHOST, started_at=None), True, id="ghost-started-at-lost"),
    pytest.param(EXITED, REMOVE, EXITED, False, id="exited-unchanged"),
    pytest.param(EXITED, REMOVE, replace(EXITED, state=State.DEAD), False, id="exited-now-dead"),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, state=State.RUNNING, started_at=ago(seconds=1)),
        True,
        id="exited-started-again",
    ),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, started_at=ago(minutes=50), finished_at=ago(minutes=40)),
        True,
        id="exited-ran-again-still-past-grace",
    ),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, finished_at=ago(minutes=30)),
        True,
        id="exited-new-finished-at",
    ),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, started_at=ago(minutes=3), finished_at=ago(minutes=2)),
        True,
        id="exited-ran-again-within-grace",
    ),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, labels={**MANAGED, PROTECT: "True"}),
        True,
        id="exited-protected-since",
    ),
    pytest.param(
        EXITED,
        REMOVE,
        replace(EXITED, labels={**MANAGED, STOPPED_GRACE: "1d"}),
        True,
        id="exited-relabelled-longer",
    ),
    pytest.param(
        EXITED, REMOVE, replace(EXITED, state=State.REMOVING), True, id="exited-being-removed"
    ),
    pytest.param(NEVER_STARTED, REMOVE, NEVER_STARTED, False, id="created-unchanged"),
    pytest.param(
        NEVER_STARTED,
        REMOVE,
        replace(NEVER_STARTED, state=State.RUNNING, started_at=ago(seconds=1)),
        True,
        id="created-started-since",
    ),
    pytest.param(
        NEVER_STARTED,
        REMOVE,
        replace(
            NEVER_STARTED, state=State.EXITED, started_at=ago(hours=1), finished_at=ago(minutes=30)
        ),
        True,
        id="created-ran-and-exited-since",
    ),
]


@pytest.mark.parametrize(("seen", "task", "current", "refused"), WARRANTED_CASES)
def test_still_warranted(seen: Container, task: Task, current: Container, refused: bool) -> None:
    action = decide(seen, task, RULES, NOW)
    assert is_actionable(action)
    assert action is not None
    why = still_warranted(action, current, task, RULES, NOW)
    if refused:
        assert isinstance(why, str)
        assert why
    else:
        assert why is None


def test_still_warranted_later_clock_keeps_a_ghost_a_ghost() -> None:
    action = decide(GHOST, KILL, RULES, NOW)
    assert action is not None
    assert still_warranted(action, GHOST, KILL, RULES, NOW + timedelta(seconds=30)) is None


def test_still_warranted_refuses_a_different_verb() -> None:
    # An action recorded for one task is not carried out by a re-check under the other.
    action = decide(GHOST, KILL, RULES, NOW)
    assert action is not None
    assert still_warranted(action, EXITED, REMOVE, RULES, NOW) is not None


def test_still_warranted_refuses_a_bad_label_action() -> None:
    bad = ghost(extra={MAX_RUNTIME: "banana"})
    action = decide(bad, KILL, RULES, NOW)
    assert action is not None
    assert still_warranted(action, bad, KILL, RULES, NOW) is not None


# --- properties ----------------------------------------------------------------------------------

IDS = [OWN_ID, OTHER_ID, "b" * 64, "c" * 64]
BAD_DURATIONS = ["banana", "", "-5", "5 m", "P", "2x"]
GOOD_DURATIONS = ["30s", "30m", "4h", "PT1H", "1d"]


def one_in(n: int) -> st.SearchStrategy[bool]:
    return st.integers(1, n).map(lambda k: k == 1)


def present_one_in(n: int, values: list[str]) -> st.SearchStrategy[str | None]:
    """One of `values` once in `n` draws, else None (the label is absent)."""
    return one_in(n).flatmap(lambda present: st.sampled_from(values) if present else st.none())


# Weighted towards in-scope containers, or the properties would hold vacuously.
LABEL_VALUES = {
    "janitor.managed": st.one_of(st.just("true"), present_one_in(2, ["false", "TRUE", ""])),
    PROTECT: present_one_in(6, ["true", "TRUE", " true", "false", "yes"]),
    MAX_RUNTIME: present_one_in(3, GOOD_DURATIONS + BAD_DURATIONS),
    STOPPED_GRACE: present_one_in(3, GOOD_DURATIONS + BAD_DURATIONS),
    "team": present_one_in(2, ["ide", "ops"]),
    COMPOSE: present_one_in(5, ["janitor", "app"]),
}


@st.composite
def labels_strategy(draw: st.DrawFn) -> dict[str, str]:
    drawn = {key: draw(values) for key, values in LABEL_VALUES.items()}
    return {key: value for key, value in drawn.items() if value is not None}


EVERY_STATE = st.sampled_from([*State, "unknown"])
CANDIDATE_STATES = {
    Task.KILL_GHOSTS: st.just(State.RUNNING),
    Task.REMOVE_STOPPED: st.sampled_from([State.EXITED, State.DEAD, State.CREATED]),
}
# The same task for the snapshot and the test within one example, so most snapshots are in
# a state the task acts on.
# The container tasks: the unused prune has its own rules (janitor.unused).
TASK = st.shared(st.sampled_from([Task.KILL_GHOSTS, Task.REMOVE_STOPPED]), key="task")
SELECTOR_STRATEGY = st.sampled_from(list(SELECTORS.values()))
# Ages around the budgets below, and now and then an instant after NOW (the daemon's clock
# is the only clock, but a container's own instants can still disagree with it).
AGE = st.timedeltas(min_value=timedelta(hours=-1), max_value=timedelta(days=3))
SPAN = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=1))
BUDGET = st.one_of(
    st.sampled_from([timedelta(minutes=10), timedelta(hours=1), timedelta(hours=2)]),
    st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=2)),
)


@st.composite
def rules_strategy(draw: st.DrawFn) -> Rules:
    return Rules(
        selector=draw(SELECTOR_STRATEGY),
        max_runtime=draw(BUDGET),
        stopped_grace=draw(BUDGET),
        created_grace=draw(BUDGET),
        own_container_ids=frozenset(draw(st.sets(st.sampled_from([OWN_ID, "b" * 64])))),
        own_compose_projects=frozenset(draw(st.sets(st.just("janitor")))),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[Container, Summary]:
    """An inspected container and its list entry, with created <= started <= finished.

    Any inspect instant may be Docker's zero time (None); the list always has a creation time.
    """
    task = draw(TASK)
    state = draw(EVERY_STATE if draw(one_in(4)) else CANDIDATE_STATES[task])
    created = NOW - draw(AGE)
    # Docker's zero StartedAt is the rule for created containers, the exception otherwise.
    never_started = draw(one_in(4) if state != State.CREATED else st.integers(0, 3).map(bool))
    started = None if never_started else created + draw(SPAN)
    finished = (started or created) + draw(SPAN) if draw(st.integers(0, 4)) else None
    container = Container(
        id=draw(st.sampled_from(IDS)) if draw(one_in(4)) else OTHER_ID,
        name="c",
        state=state,
        labels=draw(labels_strategy()),
        created_at=None if draw(st.integers(0, 9)) == 0 else created,
        started_at=started,
        finished_at=finished,
        auto_remove=draw(st.integers(0, 4)) == 0,
    )
    return container, summary_of(container, created_at=created)


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(snapshots(), rules_strategy(), TASK)
def test_protected_or_unmanaged_never_selected(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task
) -> None:
    container, summary = snapshot
    labels = container.labels
    exempt = (
        labels.get(PROTECT, "").strip().lower() == "true"
        or not rules.selector.matches(labels)
        or container.id in rules.own_container_ids
        or labels.get(COMPOSE) in rules.own_compose_projects
    )
    if exempt:
        assert decide(container, task, rules, NOW) is None
        assert not could_be_eligible(summary, task, rules, NOW)
        assert not is_in_scope(container, rules)


@PROPERTY
@given(snapshots(), rules_strategy())
def test_never_both_killed_and_removed(snapshot: tuple[Container, Summary], rules: Rules) -> None:
    container, _ = snapshot
    killed = select([container], KILL, rules, NOW)
    removed = select([container], REMOVE, rules, NOW)
    assert not (killed and removed)
    assert all(a.verb is Verb.KILL for a in killed)
    assert all(a.verb is Verb.REMOVE for a in removed)


@PROPERTY
@given(snapshots(), rules_strategy(), TASK)
def test_zero_timestamp_never_makes_eligible(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task
) -> None:
    """One named exception: a dead container with a zero FinishedAt is measured from when the
    janitor first saw it dead or, with no such record (no Redis, as here), from its creation
    with the longer of the stopped and created graces. Both instants are known ones."""
    container, _ = snapshot
    action = decide(container, task, rules, NOW)
    if is_actionable(action):
        assert action is not None
        since = {
            Reason.OVER_RUNTIME_BUDGET: container.started_at,
            Reason.EXITED_PAST_GRACE: container.finished_at,
            Reason.CREATED_NEVER_STARTED: container.created_at,
            Reason.DEAD_PAST_GRACE: container.created_at,
        }[action.reason]
        assert since is not None
        if action.reason is Reason.DEAD_PAST_GRACE:
            assert container.state == State.DEAD
            assert container.finished_at is None
            # The longer of its stopped grace (a label may set it) and the created grace.
            assert NOW - since > rules.created_grace
    # Losing the instant a decision rests on never turns "leave it" into an action.
    # (Not started_at of a created container: there None is what "never started" means.)
    losable = ["finished_at", "created_at"]
    if container.state != State.CREATED:
        losable.append("started_at")
    for lost in losable:
        lost_action = decide(replace(container, **{lost: None}), task, rules, NOW)
        if is_actionable(lost_action) and not is_actionable(action):
            assert lost_action is not None
            assert lost_action.reason is Reason.DEAD_PAST_GRACE, lost
    if container.state in ("running", "exited", "dead"):
        zeroed = decide(replace(container, started_at=None, finished_at=None), task, rules, NOW)
        assert not is_actionable(zeroed) or (
            zeroed is not None and zeroed.reason is Reason.DEAD_PAST_GRACE
        )
    unknown = replace(container, started_at=None, finished_at=None, created_at=None)
    assert not is_actionable(decide(unknown, task, rules, NOW))


DEAD_RULES = Rules(
    selector=Selector("janitor.managed", "true"),
    max_runtime=timedelta(hours=2),
    stopped_grace=timedelta(minutes=10),
    created_grace=timedelta(hours=1),
)


@pytest.mark.parametrize(
    ("created_ago", "first_seen_ago", "expected"),
    [
        (timedelta(hours=3), timedelta(minutes=11), Reason.DEAD_PAST_GRACE),
        (timedelta(hours=3), timedelta(minutes=9), None),  # seen dead within the grace
        (timedelta(hours=3), None, None),  # Redis answered, but never recorded: not yet
    ],
)
def test_a_dead_container_of_unknown_age_counts_from_when_it_was_first_seen_dead(
    created_ago: timedelta, first_seen_ago: timedelta | None, expected: Reason | None
) -> None:
    dead = Container(
        id=IDS[0], name="d", state=State.DEAD, labels={"janitor.managed": "true"},
        created_at=NOW - created_ago, started_at=None, finished_at=None,
    )  # fmt: skip
    seen = {} if first_seen_ago is None else {dead.id: NOW - first_seen_ago}
    action = decide(dead, REMOVE, DEAD_RULES, NOW, facts=HostFacts(first_seen_dead=seen))
    assert (action.reason if action else None) is expected


@pytest.mark.parametrize(
    ("created_ago", "expected"),
    [(timedelta(minutes=61), Reason.DEAD_PAST_GRACE), (timedelta(minutes=59), None)],
)
def test_without_a_record_a_dead_container_of_unknown_age_counts_from_creation(
    created_ago: timedelta, expected: Reason | None
) -> None:
    dead = Container(
        id=IDS[0], name="d", state=State.DEAD, labels={"janitor.managed": "true"},
        created_at=NOW - created_ago, started_at=None, finished_at=None,
    )  # fmt: skip
    action = decide(dead, REMOVE, DEAD_RULES, NOW)  # no facts: no record to read
    assert (action.reason if action else None) is expected


@PROPERTY
@given(snapshots(), rules_strategy(), TASK)
def test_could_be_eligible_is_a_superset_of_decide(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task
) -> None:
    container, summary = snapshot
    if decide(container, task, rules, NOW) is not None:
        assert could_be_eligible(summary, task, rules, NOW)


@PROPERTY
@given(snapshots(), rules_strategy(), TASK, SPAN)
def test_longer_budget_never_more_eligible(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task, more: timedelta
) -> None:
    container, summary = snapshot
    longer = replace(
        rules,
        max_runtime=rules.max_runtime + more,
        stopped_grace=rules.stopped_grace + more,
        created_grace=rules.created_grace + more,
    )
    if is_actionable(decide(container, task, longer, NOW)):
        assert is_actionable(decide(container, task, rules, NOW))
    if could_be_eligible(summary, task, longer, NOW):
        assert could_be_eligible(summary, task, rules, NOW)


@PROPERTY
@given(snapshots(), rules_strategy(), TASK, st.sampled_from(GOOD_DURATIONS), SPAN)
def test_longer_label_never_more_eligible(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task, short: str, more: timedelta
) -> None:
    container, _ = snapshot
    shorter = parse_duration(short)
    longer = f"{int((shorter + more).total_seconds())}s"
    for key in (MAX_RUNTIME, STOPPED_GRACE):
        short_one = replace(container, labels={**container.labels, key: short})
        long_one = replace(container, labels={**container.labels, key: longer})
        if is_actionable(decide(long_one, task, rules, NOW)):
            assert is_actionable(decide(short_one, task, rules, NOW))


@PROPERTY
@given(snapshots(), rules_strategy(), TASK, st.sampled_from(BAD_DURATIONS))
def test_bad_label_never_actionable(
    snapshot: tuple[Container, Summary], rules: Rules, task: Task, bad: str
) -> None:
    container, _ = snapshot
    # The label the task reads; a never-started container's grace has no label.
    relevant = MAX_RUNTIME if task is KILL else STOPPED_GRACE
    if task is REMOVE and container.state == State.CREATED:
        relevant = ""
    for key in (MAX_RUNTIME, STOPPED_GRACE):
        labelled = replace(container, labels={**container.labels, key: bad})
        action = decide(labelled, task, rules, NOW)
        # A bad label never makes a container more eligible than it was without it...
        if is_actionable(action):
            unlabelled = {k: v for k, v in container.labels.items() if k != key}
            assert is_actionable(decide(replace(container, labels=unlabelled), task, rules, NOW))
        # ...and the label the task reads makes it ineligible, reported as bad_label.
        if key == relevant:
            assert not is_actionable(action)
            if action is not None:
                assert action.reason is Reason.BAD_LABEL
