"""Namespace holders: the pure rules (janitor.holders) as tables and properties, and the shell
sparing, re-checking and reaping them against tests/support/fakehost.FakeHost."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.fakehost import MANAGED, NOW, FakeHost, container, emitted, settings_for

from janitor import dependents, holders, policy, tick
from janitor.model import Action, NamespaceUser, Reason, Rules, Selector, State, Task, Verb
from janitor.project import ProjectHolder

HOLDER = {**MANAGED, "janitor.holder": "true"}
RULES = Rules(
    selector=Selector("janitor.managed", "true"),
    max_runtime=timedelta(hours=2),
    stopped_grace=timedelta(minutes=10),
    created_grace=timedelta(hours=1),
)
FULL_A = "a" * 64
FULL_B = "ab" + "c" * 62


def user(uid: str, name: str, state: str = State.RUNNING, *refs: str) -> NamespaceUser:
    return NamespaceUser(uid, name, state, tuple(refs))


@pytest.fixture(autouse=True)
def fresh_settings_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake containers of the same name share an id across tests; real ids never repeat.
    monkeypatch.setattr(dependents, "_SETTINGS", {})


@pytest.mark.parametrize(
    ("modes", "volumes_from", "expected"),
    [
        (["container:" + FULL_A], [], (FULL_A,)),
        (["none", "host", "bridge", ""], [], ()),
        (["container:h", "container:h"], ["h:ro"], ("h",)),
        ([], ["data", "logs:rw"], ("data", "logs")),
    ],
)
def test_references(modes: list[str], volumes_from: list[str], expected: tuple[str, ...]) -> None:
    assert holders.references(modes, volumes_from) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        pytest.param(FULL_A, {FULL_A}, id="full-id"),
        pytest.param("holder", {FULL_B}, id="name"),
        pytest.param("/holder", {FULL_B}, id="name-with-slash"),
        pytest.param("aaaa", {FULL_A}, id="short-id"),
        pytest.param("a", {FULL_A, FULL_B}, id="ambiguous-prefix-means-all"),
        pytest.param("renamed-away", None, id="unknown-name-unresolvable"),
        pytest.param("f" * 64, set(), id="removed-full-id"),
    ],
)
def test_resolve_as_the_daemon_does(reference: str, expected: set[str] | None) -> None:
    users = [user(FULL_A, "other"), user(FULL_B, "holder")]
    found = holders.resolve(reference, users)
    assert found == (None if expected is None else frozenset(expected))


def test_a_name_wins_over_a_prefix_and_an_id_over_a_name() -> None:
    # A container may be named like another's id prefix; the daemon looks names up first.
    users = [user(FULL_A, "x"), user(FULL_B, "aaaa"), user("d" * 64, FULL_A)]
    assert holders.resolve("aaaa", users) == {FULL_B}
    assert holders.resolve(FULL_A, users) == {FULL_A}


def kill(uid: str) -> Action:
    return Action(uid, uid[:4], Verb.KILL, Reason.OVER_RUNTIME_BUDGET)


def remove(uid: str) -> Action:
    return Action(uid, uid[:4], Verb.REMOVE, Reason.EXITED_PAST_GRACE)


@pytest.mark.parametrize(
    ("dependent_state", "kill_held", "remove_held"),
    [
        (State.RUNNING, True, True),
        (State.PAUSED, True, True),
        (State.RESTARTING, True, True),
        (State.EXITED, False, True),
        (State.CREATED, False, True),
        (State.DEAD, False, True),
    ],
)
def test_held_by_a_live_dependent_from_kill_and_by_any_from_removal(
    dependent_state: str, kill_held: bool, remove_held: bool
) -> None:
    found = holders.dependents([user(FULL_A, "h"), user(FULL_B, "m", dependent_state, FULL_A)])
    assert holders.is_held(kill(FULL_A), found) is kill_held
    assert holders.is_held(remove(FULL_A), found) is remove_held
    assert not holders.is_held(remove(FULL_B), found), "a dependent is no holder"


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(NamespaceUser(FULL_B, "m", State.EXITED, None), id="unreadable-settings"),
        pytest.param(user(FULL_B, "m", State.EXITED, "renamed-away"), id="unresolvable-name"),
    ],
)
def test_when_unsure_every_container_is_held(member: NamespaceUser) -> None:
    found = holders.dependents([user(FULL_A, "plain"), member])
    assert holders.is_held(remove(FULL_A), found)
    assert not holders.is_held(remove(FULL_B), found), "it does not hold itself"


def test_a_reference_to_a_removed_holder_holds_nothing() -> None:
    found = holders.dependents([user(FULL_A, "plain"), user(FULL_B, "m", State.RUNNING, "f" * 64)])
    assert not holders.is_held(kill(FULL_A), found)


def test_a_spared_bad_label_action_stays_reported() -> None:
    found = holders.dependents([user(FULL_A, "h"), user(FULL_B, "m", State.RUNNING, FULL_A)])
    bad = Action(FULL_A, "h", Verb.KILL, Reason.BAD_LABEL)
    assert holders.spare_held([bad, kill(FULL_A)], found) == ([bad], [kill(FULL_A)])


def test_a_marked_holder_has_no_runtime_budget_only_an_orphan_grace() -> None:
    old = container("pause", State.RUNNING, age=timedelta(days=3), labels=HOLDER)
    facts = policy.HostFacts(orphaned_since={old.id: NOW - timedelta(seconds=30)})
    assert policy.decide(old, Task.KILL_GHOSTS, RULES, NOW, facts=facts) is None
    assert policy.decide(old, Task.KILL_GHOSTS, RULES, NOW) is None, "no record: never orphaned"
    facts = policy.HostFacts(orphaned_since={old.id: NOW - timedelta(seconds=61)})
    action = policy.decide(old, Task.KILL_GHOSTS, RULES, NOW, facts=facts)
    assert action is not None
    assert action.reason is Reason.HOLDER_ORPHANED
    typo = dataclasses.replace(old, labels={**MANAGED, "janitor.holder": "ture"})
    action = policy.decide(typo, Task.KILL_GHOSTS, RULES, NOW)
    assert action is not None
    assert action.reason is Reason.OVER_RUNTIME_BUDGET


# -- property: no action ever leaves a dependent whose holder was removed ----------------------

STATES = st.sampled_from([State.RUNNING, State.EXITED, State.CREATED, State.DEAD, State.PAUSED])


@st.composite
def hosts(draw: st.DrawFn) -> list[NamespaceUser]:
    count = draw(st.integers(1, 8))
    ids = [f"{i:x}" * 64 for i in range(1, count + 1)]
    users = []
    for index, uid in enumerate(ids):
        refs = draw(st.lists(st.sampled_from([*ids, f"name{index}", uid[:6]]), max_size=3))
        readable = draw(st.booleans()) or not refs
        users.append(
            NamespaceUser(uid, f"c{index}", draw(STATES), tuple(refs) if readable else None)
        )
    return users


@settings(max_examples=300, deadline=None)
@given(hosts(), st.data())
def test_no_action_leaves_a_dependent_whose_holder_was_removed_or_killed(
    users: list[NamespaceUser], data: st.DataObject
) -> None:
    verbs = data.draw(st.lists(st.sampled_from([Verb.KILL, Verb.REMOVE]), min_size=len(users)))
    pairs = zip(users, verbs, strict=False)
    actions = [Action(u.id, u.name, verb, Reason.EXITED_PAST_GRACE) for u, verb in pairs]
    found = holders.dependents(users)
    allowed, _ = holders.spare_held(actions, found)
    gone = {a.container_id for a in allowed if a.verb is Verb.REMOVE}
    stopped = {a.container_id for a in allowed if a.verb is Verb.KILL}
    for member in users:
        for holder_id in set(holders_named_by(member, users)) - {member.id}:
            assert holder_id not in gone, (member, holder_id)
            if member.state in holders.LIVE_STATES:
                assert holder_id not in stopped, (member, holder_id)


def holders_named_by(member: NamespaceUser, users: list[NamespaceUser]) -> Iterator[str]:
    """Every container the member might depend on: all of them when it cannot be told."""
    everyone = [u.id for u in users]
    if member.references is None:
        yield from everyone
        return
    for reference in member.references:
        meant = holders.resolve(reference, users)
        yield from everyone if meant is None else meant


# -- the shell: spared, counted, re-checked, reaped -------------------------------------------


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeHost]:
    fakes: list[FakeHost] = []
    monkeypatch.setattr(tick, "DockerHost", lambda config, **_: fakes.pop(0))
    return fakes


def sweep(
    fakes: list[FakeHost], fake: FakeHost, task: Task, client: redis.Redis[bytes] | None = None
) -> tuple[tick.SweepReport, list[dict[str, object]]]:
    fakes.append(fake)
    with capture_logs() as logs:
        report = tick.sweep_host(settings_for(fake), fake.name, task, redis_client=client)
    assert isinstance(report, tick.SweepReport)
    return report, logs


def test_a_holder_with_a_running_member_is_spared_and_counted(use_fake: list[FakeHost]) -> None:
    ghost_holder = container("holder", State.RUNNING)
    member = container("member", State.RUNNING, age=timedelta(minutes=1), labels={})
    fake = FakeHost([ghost_holder, member])
    fake.joins[member.id] = (ghost_holder.id,)
    report, logs = sweep(use_fake, fake, Task.KILL_GHOSTS)
    assert report.results == ()
    emitted(logs, "sweep_finished", held=1)
    assert fake.calls["stop"] == 0


def test_a_member_joining_between_decision_and_act_is_refused(use_fake: list[FakeHost]) -> None:
    ghost = container("ghost", State.RUNNING)
    fake = FakeHost([ghost])
    member = container("late", State.RUNNING, age=timedelta(0), labels={})

    def join() -> None:
        fake.containers[member.id] = member
        fake.joins[member.id] = ("ghost",)

    fake.meddlers[ghost.id] = join
    report, logs = sweep(use_fake, fake, Task.KILL_GHOSTS)
    assert [r.detail for r in report.results] == ["holder_in_use"]
    emitted(logs, "action_refused", container_id=ghost.id, detail="holder_in_use")
    assert fake.calls["stop"] == 0


def test_a_member_started_again_before_the_kill_is_seen_by_the_re_check(
    use_fake: list[FakeHost],
) -> None:
    ghost = container("ghost", State.RUNNING)
    member = container("member", State.EXITED, labels={})
    fake = FakeHost([ghost, member])
    fake.joins[member.id] = (ghost.id,)

    def start_member() -> None:
        fake.containers[member.id] = dataclasses.replace(member, state=State.RUNNING)

    fake.meddlers[ghost.id] = start_member
    report, _ = sweep(use_fake, fake, Task.KILL_GHOSTS)
    assert [r.detail for r in report.results] == ["holder_in_use"]


def test_a_re_check_lists_everything_when_the_newest_known_containers_are_gone(
    use_fake: list[FakeHost],
) -> None:
    ghost = container("ghost", State.RUNNING)
    churn = [container(f"churn{i}", State.EXITED, labels={}) for i in range(6)]
    fake = FakeHost([ghost, *churn])
    member = container("late", State.RUNNING, age=timedelta(0), labels={})

    def churn_and_join() -> None:
        for gone in churn:
            del fake.containers[gone.id]
        fake.containers[member.id] = member
        fake.joins[member.id] = (ghost.id,)

    fake.meddlers[ghost.id] = churn_and_join
    report, _ = sweep(use_fake, fake, Task.KILL_GHOSTS)
    assert [r.detail for r in report.results] == ["holder_in_use"]


def test_unreadable_settings_hold_every_container(use_fake: list[FakeHost]) -> None:
    exited = container("old")
    stranger = container("stranger", State.EXITED, labels={})
    fake = FakeHost([exited, stranger])
    fake.unreadable.add(stranger.id)
    report, logs = sweep(use_fake, fake, Task.REMOVE_STOPPED)
    assert report.results == ()
    emitted(logs, "sweep_finished", held=1)


def test_an_orphaned_holder_is_killed_a_grace_after_it_was_first_seen_orphaned(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    pause = container("pause", State.RUNNING, age=timedelta(minutes=5), labels=HOLDER)
    member = container("member", State.EXITED)
    fake = FakeHost([pause, member])
    fake.joins[member.id] = (pause.id,)
    first, _ = sweep(use_fake, fake, Task.KILL_GHOSTS, client)
    assert first.results == (), "first seen orphaned now"
    fake.now = NOW + timedelta(seconds=61)
    later, logs = sweep(use_fake, fake, Task.KILL_GHOSTS, client)
    emitted(logs, "action_done", container_id=pause.id, reason="holder_orphaned")
    # Killed, but its exited member still needs it: not removed.
    fake.now = NOW + timedelta(hours=1)
    removal, logs = sweep(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert [r.action.container_id for r in removal.results] == [member.id]
    assert pause.id in fake.containers
    assert later.counts == {"done": 1}


def test_without_redis_an_orphaned_holder_is_never_killed(use_fake: list[FakeHost]) -> None:
    pause = container("pause", State.RUNNING, age=timedelta(days=1), labels=HOLDER)
    report, _ = sweep(use_fake, FakeHost([pause]), Task.KILL_GHOSTS)
    assert report.results == ()


# -- the spawner's helper ---------------------------------------------------------------------


def test_project_holder_gives_a_spawner_its_labels_and_run_arguments() -> None:
    project = ProjectHolder("session-42", labels=MANAGED)
    assert project.holder_run_kwargs() == {
        "name": "session-42-holder",
        "labels": {**MANAGED, "janitor.holder": "true"},
        "ipc_mode": "shareable",
    }
    assert project.member_run_kwargs(FULL_A) == {
        "labels": MANAGED,
        "network_mode": "container:" + FULL_A,
        "ipc_mode": "container:" + FULL_A,
    }
    assert project.member_cli_args(FULL_A) == [
        "--label",
        "janitor.managed=true",
        "--network",
        "container:" + FULL_A,
        "--ipc",
        "container:" + FULL_A,
    ]
    with pytest.raises(ValueError, match="not a full container id"):
        project.member_run_kwargs("session-42-holder")
    with pytest.raises(ValueError, match="cannot share"):
        ProjectHolder("p", share=("uts",))
