"""A sweep against the clock and the lease: the deadline over inspecting and acting, the cap
over what was not inspected, the lease confirmed once per batch, the re-checks in between.

The engine reads time.monotonic(); here a clock of the test's own stands in for it, and each
inspect of the fake host takes one second of it, so what the deadline cuts is exact.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs
from support.fakehost import NOW, FakeHost, LogEvents, container, emitted, settings_for

from janitor import dependents, kinds, sweep
from janitor.errors import LeaseLostError
from janitor.kinds import sweep_containers
from janitor.locks import NoLease
from janitor.model import Outcome, State, Status, SweepReport, Task
from janitor.sweep import SweepOptions
from janitor.vocabulary import Detail


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += 1.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The monotonic clock of the engine, the kinds and the dependents reader, advanced one
    second by every inspect of a slow host; the reader's cache as a new worker process has it."""
    fake = Clock()
    monkeypatch.setattr(sweep, "time", SimpleNamespace(monotonic=fake))
    monkeypatch.setattr(dependents, "time", SimpleNamespace(monotonic=fake))
    monkeypatch.setattr(kinds, "time", SimpleNamespace(monotonic=fake))
    monkeypatch.setattr(dependents, "_SETTINGS", {})
    return fake


def slow_host(clock: Clock, count: int, state: State = State.EXITED) -> FakeHost:
    fake = FakeHost([container(f"c-{i}", state) for i in range(count)])
    fake.on_inspect = clock.tick
    return fake


def run(
    fake: FakeHost, options: SweepOptions, lease: NoLease | None = None
) -> tuple[SweepReport, LogEvents]:
    with capture_logs() as logs:
        report = sweep_containers(
            fake, settings_for(fake).rules(), options, lease or NoLease(), NOW
        )
    return report, logs


def test_the_deadline_cuts_inspecting_short_and_leaves_time_to_act(clock: Clock) -> None:
    fake = slow_host(clock, 10)
    # Ten seconds: inspects may start in the first five (six of them, one a second), and
    # each removal re-inspects (one second) until the deadline.
    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=1, deadline=clock.now + 10)
    report, logs = run(fake, options)
    assert report.status is Status.OK
    assert Counter(r.outcome for r in report.results) == {Outcome.DONE: 5, Outcome.REFUSED: 1}
    assert {r.detail for r in report.results if r.outcome is Outcome.REFUSED} == {
        Detail.DEADLINE_REACHED
    }
    assert fake.calls["remove"] == 5
    # Inspected yet not reached by the acting: still there, as the four never inspected.
    assert len(fake.containers) == 5
    (line,) = emitted(logs, "sweep_cut_short", candidates=10, inspected=6, not_inspected=4)
    assert (line["done"], line["not_acted"]) == (5, 1)
    assert not [e for e in logs if e["event"] == "sweep_halted"]


def test_the_next_tick_goes_on_where_the_last_one_stopped(clock: Clock) -> None:
    fake = slow_host(clock, 10)
    for _ in range(3):
        run(fake, SweepOptions(Task.REMOVE_STOPPED, concurrency=1, deadline=clock.now + 10))
    assert not fake.containers


def test_the_cap_counts_the_candidates_the_deadline_left_uninspected(clock: Clock) -> None:
    fake = slow_host(clock, 10)
    options = SweepOptions(
        Task.REMOVE_STOPPED, concurrency=1, max_actions=9, deadline=clock.now + 10
    )
    report, logs = run(fake, options)
    # Six known eligible and four not inspected could be ten: over the cap, nothing goes.
    assert report.status is Status.ABORTED
    assert fake.calls["remove"] == 0
    emitted(logs, "sweep_aborted", eligible=6, uninspected=4, max_actions=9)
    emitted(logs, "sweep_cut_short", not_inspected=4, done=0)


def test_the_deadline_bounds_the_first_reading_of_the_dependents_too(clock: Clock) -> None:
    # A new worker's first sweep of a busy host: four stopped candidates, and six running
    # containers whose namespace settings it has never read (one inspect each, a second).
    fake = FakeHost(
        [container(f"exit-{i}") for i in range(4)]
        + [container(f"busy-{i}", State.RUNNING) for i in range(6)]
    )
    fake.on_inspect = fake.on_settings_read = clock.tick
    # Seven seconds: the candidates' inspects in the first half (four), then four of the
    # six readings before the deadline.
    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=1, deadline=clock.now + 7)
    report, logs = run(fake, options)
    # Two containers' settings unknown: either might join any candidate, so none is removed.
    assert report.status is Status.OK
    assert fake.calls["remove"] == 0
    assert report.held == 4
    (line,) = emitted(logs, "sweep_cut_short", candidates=4, inspected=4, not_inspected=0)
    assert (line["dependents_not_read"], line["done"]) == (2, 0)
    # The next tick reads only the two left (four cached), and has the time to act.
    reads_before = fake.calls["inspect"]
    report, logs = run(
        fake, SweepOptions(Task.REMOVE_STOPPED, concurrency=1, deadline=clock.now + 20)
    )
    assert report.counts == {"done": 4}
    assert not [e for e in logs if e["event"] == "sweep_cut_short"]
    # Four candidates inspected, two settings read, four re-inspected before their removal.
    assert fake.calls["inspect"] - reads_before == 4 + 2 + 4


def test_a_re_check_under_way_at_the_deadline_still_reads_a_newcomer(clock: Clock) -> None:
    stopped = [container("exit-0"), container("exit-1")]
    fake = FakeHost(stopped)
    fake.on_inspect = fake.on_settings_read = clock.tick
    newcomer = container("newcomer", State.RUNNING)
    # A container started while the first removal is re-checked: the second removal's
    # re-check lists it, past the deadline, and must read it rather than guess.
    fake.meddlers[stopped[0].id] = lambda: fake.containers.__setitem__(newcomer.id, newcomer)
    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=1, deadline=clock.now + 3.5)
    report, _ = run(fake, options)
    # It joins nobody: both go, where an unread newcomer would have held the second as
    # "holder_in_use", a member that never joined.
    assert report.counts == {"done": 2}
    assert newcomer.id in fake.containers


def test_past_the_deadline_before_the_sweep_nothing_is_even_listed() -> None:
    fake = FakeHost([container("exit-1"), container("exit-2")])
    report, logs = run(fake, SweepOptions(Task.REMOVE_STOPPED, deadline=0.0))
    assert report.status is Status.OK
    assert not report.results
    emitted(logs, "sweep_cut_short", candidates=0, done=0)
    assert fake.calls["list"] == fake.calls["remove"] == 0


class CountingLease(NoLease):
    """Confirms `good` times, then finds the lease lost."""

    def __init__(self, good: int = 1000) -> None:
        self.confirmed = 0
        self.good = good

    def confirm(self) -> None:
        if self.confirmed >= self.good:
            raise LeaseLostError("janitor:sweep:alpha:remove-stopped expired")
        self.confirmed += 1


def test_the_lease_is_confirmed_once_per_batch_of_concurrent_actions() -> None:
    fake = FakeHost([container(f"c-{i}") for i in range(10)])
    lease = CountingLease()
    report, _ = run(fake, SweepOptions(Task.REMOVE_STOPPED, concurrency=4), lease)
    assert report.counts == {"done": 10}
    assert lease.confirmed == 3  # batches of 4, 4 and 2


def test_a_lease_lost_between_batches_stops_the_sweep_before_the_next_one() -> None:
    fake = FakeHost([container(f"c-{i}") for i in range(10)])
    report, logs = run(fake, SweepOptions(Task.REMOVE_STOPPED, concurrency=4), CountingLease(1))
    assert report.status is Status.FAILED
    assert fake.calls["remove"] == 4  # the first batch only
    refused = {r.detail for r in report.results if r.outcome is Outcome.REFUSED}
    assert refused <= {Detail.LEASE_LOST, Detail.SWEEP_STOPPED}
    assert Detail.LEASE_LOST in refused
    emitted(logs, "sweep_halted", status="failed")


def test_ran_and_restarted_since_the_decision_are_refused_in_a_batched_sweep(
    clock: Clock,
) -> None:
    stopped = [container(f"exit-{i}") for i in range(4)]
    fake = FakeHost(stopped)
    fake.on_inspect = clock.tick
    ran, started = stopped[1], stopped[2]
    # One finished again (as `docker start -a` of a short job leaves it), one started anew.
    fake.meddlers[ran.id] = lambda: fake.containers.__setitem__(
        ran.id, dataclasses.replace(ran, finished_at=NOW - timedelta(hours=2))
    )
    fake.meddlers[started.id] = lambda: fake.containers.__setitem__(
        started.id, container(started.name, age=timedelta(hours=2))
    )
    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=2, deadline=clock.now + 100)
    report, logs = run(fake, options)
    assert report.counts == {"done": 2, "refused": 2}
    emitted(logs, "action_refused", container_id=ran.id, detail="ran_since_decision")
    emitted(logs, "action_refused", container_id=started.id, detail="restarted_since_decision")
    assert {ran.id, started.id} <= fake.containers.keys()

    ghosts = [container(f"ghost-{i}", State.RUNNING) for i in range(3)]
    fake = FakeHost(ghosts)
    restarted = ghosts[2]
    fake.meddlers[restarted.id] = lambda: fake.containers.__setitem__(
        restarted.id, container(restarted.name, State.RUNNING, age=timedelta(hours=2.5))
    )
    report, logs = run(fake, SweepOptions(Task.KILL_GHOSTS, concurrency=2))
    assert report.counts == {"done": 2, "refused": 1}
    emitted(logs, "action_refused", container_id=restarted.id, detail="restarted_since_decision")
    assert fake.containers[restarted.id].state == State.RUNNING


def test_a_batch_of_re_checks_shares_one_reading_of_the_dependents() -> None:
    fake = FakeHost([container(f"c-{i}") for i in range(20)])
    report, _ = run(fake, SweepOptions(Task.REMOVE_STOPPED, concurrency=4))
    assert report.counts == {"done": 20}
    # One inspect to decide and one to re-check each: a re-check's `since` list never makes
    # the reader forget (and inspect again) the settings of every other container.
    assert fake.calls["inspect"] == 2 * 20
    # The decision's list, the dependents' full list, then one `since` list per batch of 4.
    assert fake.calls["list"] <= 2 + 20 // 4
