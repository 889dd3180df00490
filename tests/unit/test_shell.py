"""The shell's steps against a fake Docker host, read through structlog's capture_logs.

Each test drives the real tick, engine and kinds (janitor.tick, janitor.sweep, janitor.kinds)
with tests/support/fakehost.FakeHost in place of the Docker adapter, and checks what the
report says and what the log says: every failure path logs its error, at error level.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs
from support.fakehost import NOW, FakeHost, LogEvents, container, emitted, settings_for

from janitor import keys, tick
from janitor.errors import (
    ActionFailedError,
    ContainerConflictError,
    ContainerGoneError,
    HostUnreachableError,
    LeaseLostError,
)
from janitor.kinds import sweep_containers
from janitor.locks import NoLease
from janitor.model import Outcome, State, Status, SweepNotRun, SweepReport, Task
from janitor.sweep import SweepOptions
from janitor.vocabulary import Detail

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def use_fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeHost]:
    """Every tick opened in the test gets the next fake host of the returned list."""
    fakes: list[FakeHost] = []

    def connect(config: object, **_: object) -> FakeHost:
        del config
        return fakes.pop(0)

    monkeypatch.setattr(tick, "DockerHost", connect)
    return fakes


def run_tick(
    fakes: list[FakeHost],
    fake: FakeHost,
    task: Task,
    redis_client: redis.Redis[bytes] | None = None,
    **overrides: Any,
) -> tuple[SweepReport | SweepNotRun, LogEvents]:
    fakes.append(fake)
    with capture_logs() as logs:
        outcome = tick.sweep_host(
            settings_for(fake, **overrides), fake.name, task, redis_client=redis_client
        )
    return outcome, logs


def as_report(outcome: SweepReport | SweepNotRun) -> SweepReport:
    assert isinstance(outcome, SweepReport), outcome
    return outcome


# -- each Docker call of a sweep failing -----------------------------------------------------

HOST_CALL_FAILURES = {
    "timeout": HostUnreachableError(
        "alpha (unix:///run/fake.sock) did not answer {op}: Read timed out. (read timeout=10)"
    ),
    "refused": HostUnreachableError(
        "alpha (unix:///run/fake.sock) did not answer {op}: [Errno 111] Connection refused"
    ),
}


@pytest.mark.parametrize("kind", sorted(HOST_CALL_FAILURES))
@pytest.mark.parametrize("operation", ["info", "list", "inspect"])
def test_a_host_call_failing_logs_sweep_failed_with_its_error(
    use_fake: list[FakeHost], operation: str, kind: str
) -> None:
    fake = FakeHost([container("old-exit")])
    error = HostUnreachableError(str(HOST_CALL_FAILURES[kind]).format(op=operation))
    fake.failures[operation] = error
    outcome, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED)
    report = as_report(outcome)
    assert report.status is Status.FAILED
    assert report.error == str(error)
    failed = emitted(logs, "sweep_failed", error=str(error))
    assert [e["log_level"] for e in failed] == ["error"]
    emitted(logs, "sweep_finished", status="failed")
    assert fake.containers, "nothing was removed"


@pytest.mark.parametrize("operation", ["stop", "remove"])
def test_an_action_failing_is_a_failed_action_not_a_failed_sweep(
    use_fake: list[FakeHost], operation: str
) -> None:
    task = Task.KILL_GHOSTS if operation == "stop" else Task.REMOVE_STOPPED
    state = State.RUNNING if operation == "stop" else State.EXITED
    fake = FakeHost([container("victim", state)])
    fake.failures[operation] = ActionFailedError("500 Server Error: driver failed")
    report, logs = run_tick(use_fake, fake, task)
    assert as_report(report).status is Status.OK
    assert as_report(report).counts == {"failed": 1}
    line = emitted(logs, "action_failed", detail="500 Server Error: driver failed")
    assert line[0]["log_level"] == "warning"


def test_an_action_whose_host_goes_away_halts_the_sweep(use_fake: list[FakeHost]) -> None:
    fake = FakeHost([container(f"exit-{i}") for i in range(3)])
    fake.failures["remove"] = HostUnreachableError("alpha did not answer remove: timed out")
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, concurrency=1)
    assert as_report(report).status is Status.FAILED
    emitted(logs, "sweep_halted", status="failed")
    emitted(logs, "sweep_failed", error="alpha did not answer remove: timed out")
    assert fake.calls["remove"] == 1, "no new action after the host was lost"


# -- Redis: a held lease, Redis down, the daemon's identity ---------------------------------


def test_a_held_lease_skips_the_tick(use_fake: list[FakeHost], redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    client.set(keys.sweep_lease("alpha", "remove-stopped"), "someone-else", px=60_000)
    fake = FakeHost([container("old-exit")])
    outcome, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert isinstance(outcome, SweepNotRun)
    assert outcome.to_dict() == {
        "task": "remove-stopped",
        "host": "alpha",
        "status": "skipped",
        "why": "janitor:sweep:alpha:remove-stopped is held by someone-else",
    }
    emitted(logs, "sweep_skipped", why=outcome.why)
    assert fake.calls["remove"] == 0


class _LeaselessRedis(redis.Redis):  # type: ignore[type-arg]
    """Reaches Redis for everything but the sweep leases, as when it fails mid-tick."""

    def set(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        if str(name).startswith("janitor:sweep:"):
            raise redis.exceptions.ConnectionError("Connection reset by peer")
        return super().set(name, *args, **kwargs)


def test_redis_failing_while_taking_the_lease_fails_the_sweep_instead_of_skipping_it(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    client = _LeaselessRedis.from_url(redis_url)
    fake = FakeHost([container("old-exit")])
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert as_report(report).status is Status.FAILED
    assert "Connection reset by peer" in as_report(report).error
    emitted(logs, "sweep_failed")
    assert not [e for e in logs if e["event"] == "sweep_skipped"]
    assert fake.calls["remove"] == 0


def test_the_first_tick_records_the_daemon_and_a_swapped_daemon_is_refused(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    first, logs = run_tick(use_fake, FakeHost(daemon_id="A"), Task.KILL_GHOSTS, client)
    assert as_report(first).status is Status.OK
    emitted(logs, "daemon_recorded", daemon_id="A")
    swapped = FakeHost([container("old-exit")], daemon_id="B")
    report, logs = run_tick(use_fake, swapped, Task.REMOVE_STOPPED, client)
    assert as_report(report).status is Status.FAILED
    assert "refusing to act" in emitted(logs, "sweep_failed")[0]["error"]
    assert swapped.calls["list"] == 0, "nothing is even listed on the wrong daemon"


def test_owner_leases_are_unchecked_without_redis(use_fake: list[FakeHost]) -> None:
    leased = container(
        "leased", State.RUNNING, labels={"janitor.managed": "true", "janitor.lease": "session-1"}
    )
    report, logs = run_tick(use_fake, FakeHost([leased]), Task.KILL_GHOSTS, max_runtime="1d")
    assert as_report(report).results == ()
    emitted(logs, "owner_leases_unchecked", why="no Redis", containers=1)


# -- the engine's gates and outcomes --------------------------------------------------------


def test_over_the_cap_nothing_is_touched(use_fake: list[FakeHost]) -> None:
    fake = FakeHost([container(f"exit-{i}") for i in range(3)])
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, max_actions=2)
    assert as_report(report).status is Status.ABORTED
    assert as_report(report).counts == {"refused": 3}
    assert emitted(logs, "sweep_aborted", eligible=3)[0]["log_level"] == "error"
    assert len(emitted(logs, "action_refused", detail="over_max_actions")) == 3
    assert len(fake.containers) == 3


def test_a_dry_run_plans_and_changes_nothing(use_fake: list[FakeHost]) -> None:
    fake = FakeHost([container("ghost", State.RUNNING)])
    report, logs = run_tick(use_fake, fake, Task.KILL_GHOSTS, dry_run=True)
    assert as_report(report).counts == {"planned": 1}
    emitted(logs, "action_planned", reason="over_runtime_budget", dry_run=True)
    assert fake.calls["stop"] == 0


def test_done_gone_and_refused_each_have_their_line(use_fake: list[FakeHost]) -> None:
    done, gone, restarted = (container(n) for n in ("done", "gone", "restarted"))
    fake = FakeHost([done, gone, restarted])
    fake.meddlers[gone.id] = lambda: fake.containers.pop(gone.id)
    fake.meddlers[restarted.id] = lambda: fake.containers.__setitem__(
        restarted.id, container("restarted", age=timedelta(hours=2))
    )
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED)
    assert as_report(report).counts == {"done": 1, "gone": 1, "refused": 1}
    emitted(logs, "action_done", container_id=done.id, action="remove")
    emitted(logs, "action_gone", container_id=gone.id)
    emitted(logs, "action_refused", container_id=restarted.id, detail="restarted_since_decision")
    decided = emitted(logs, "sweep_decided", candidates=3, eligible=3)
    assert decided[0]["log_level"] == "debug"


def test_a_404_from_an_action_is_gone_only_if_a_fresh_inspect_agrees(
    use_fake: list[FakeHost],
) -> None:
    still_there, really_gone = container("still-there"), container("really-gone")
    fake = FakeHost([still_there, really_gone])
    fake.failures["remove"] = ContainerGoneError("remove: no such container")
    # The second one vanishes between the re-check and the re-inspect after the 404.
    fake.meddlers[really_gone.id] = lambda: fake.meddlers.__setitem__(
        really_gone.id, lambda: fake.containers.pop(really_gone.id)
    )
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, concurrency=1)
    assert as_report(report).counts == {"failed": 1, "gone": 1}
    emitted(logs, "action_failed", container_id=still_there.id, detail="still_there_after_404")
    emitted(logs, "action_gone", container_id=really_gone.id)


def test_a_kill_that_kept_the_restart_policy_is_done_with_its_caveat(
    use_fake: list[FakeHost],
) -> None:
    fake = FakeHost([container("ghost", State.RUNNING)])
    fake.kill_caveat = Detail.RESTART_POLICY_KEPT
    report, logs = run_tick(use_fake, fake, Task.KILL_GHOSTS)
    [action] = as_report(report).to_dict()["actions"]
    assert (action["outcome"], action["detail"]) == ("done", "restart_policy_kept")
    emitted(logs, "action_done", detail="restart_policy_kept")


def test_a_daemon_conflict_is_refused(use_fake: list[FakeHost]) -> None:
    fake = FakeHost([container("busy")])
    fake.failures["remove"] = ContainerConflictError("removal already in progress")
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED)
    assert as_report(report).counts == {"refused": 1}
    emitted(logs, "action_refused", detail="removal already in progress")


def test_a_lost_lease_halts_every_action_after_it() -> None:
    class LosingLease(NoLease):
        def confirm(self) -> None:
            raise LeaseLostError("janitor:sweep:alpha:remove-stopped expired")

    fake = FakeHost([container(f"exit-{i}") for i in range(3)])
    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=1)
    with capture_logs() as logs:
        report = sweep_containers(fake, settings_for(fake).rules(), options, LosingLease(), NOW)
    assert report.status is Status.FAILED
    assert {r.outcome for r in report.results} == {Outcome.REFUSED}
    assert report.results[0].detail == "lease_lost"
    emitted(logs, "sweep_halted", status="failed")
    assert fake.calls["remove"] == 0


def test_a_removal_sweep_that_meets_a_spike_starts_no_new_removal_and_yields_the_rest() -> None:
    fake = FakeHost([container(f"exit-{n}") for n in range(6)])
    asked: list[bool] = []

    def spiking() -> bool:
        asked.append(len(asked) >= 2)  # the spike begins after two removals
        return asked[-1]

    options = SweepOptions(Task.REMOVE_STOPPED, concurrency=1, yield_to=spiking)
    with capture_logs() as logs:
        report = sweep_containers(fake, settings_for(fake).rules(), options, NoLease(), NOW)
    assert report.status is Status.OK
    assert report.counts == {"done": 2, "refused": 4}
    refused = {r.detail for r in report.results if r.outcome is Outcome.REFUSED}
    assert refused == {Detail.YIELDED_TO_SPIKE}
    assert fake.calls["remove"] == 2
    assert asked == [False, False, True], "not asked again once it yielded"
    emitted(logs, "sweep_yielded", yielded=4)
    assert not [e for e in logs if e["event"] == "sweep_halted"]


def test_every_event_name_in_the_code_is_literal() -> None:
    source = "\n".join(p.read_text() for p in (README.parent / "janitor").rglob("*.py"))
    assert not re.search(r"""\.(debug|info|warning|error|exception)\(\s*f["']""", source)


def test_every_documented_event_is_asserted_by_a_unit_test() -> None:
    section = README.read_text().split("## Logs", 1)[1].split("\n## ", 1)[0]
    documented = {
        name
        for row in section.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])
    }
    tests = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    asserted = set(re.findall(r"""emitted\(\s*\w+,\s*"([a-z_]+)\"""", tests))
    assert documented, "the README's Logs table was not found"
    assert documented - asserted == set()


def test_a_redis_error_reading_owner_leases_never_makes_a_ghost() -> None:
    leased = container(
        "leased", State.RUNNING, labels={"janitor.managed": "true", "janitor.lease": "s-1"}
    )

    def redis_down(keys: frozenset[str]) -> frozenset[str]:
        raise redis.exceptions.ConnectionError(f"Connection refused reading {sorted(keys)}")

    fake = FakeHost([leased])
    rules = settings_for(fake, max_runtime="1d").rules()
    with capture_logs() as logs:
        report = sweep_containers(
            fake, rules, SweepOptions(Task.KILL_GHOSTS), NoLease(), NOW, dead_leases=redis_down
        )
    assert report.results == ()
    emitted(logs, "owner_leases_unchecked", why="Connection refused reading ['s-1']")
    assert fake.calls["stop"] == 0


def test_a_dead_container_of_unknown_age_goes_a_grace_after_it_was_first_seen(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    dead = dataclasses.replace(container("dead", State.DEAD), started_at=None, finished_at=None)
    fake = FakeHost([dead])
    first, _ = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert as_report(first).results == (), "first seen now: within its grace"
    fake.now = NOW + timedelta(minutes=11)
    later, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert as_report(later).counts == {"done": 1}
    emitted(logs, "action_done", container_id=dead.id, reason="dead_past_grace")


def test_a_dead_container_of_unknown_age_is_kept_when_its_record_cannot_be_written(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    class NoPipelines(redis.Redis):  # type: ignore[type-arg]
        def pipeline(self, *args: Any, **kwargs: Any) -> Any:
            raise redis.exceptions.ConnectionError("Connection reset by peer")

    dead = dataclasses.replace(container("dead", State.DEAD), started_at=None, finished_at=None)
    fake = FakeHost([dead])
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED, NoPipelines.from_url(redis_url))
    # Created three hours ago, but a record that cannot be read means "seen now", never old.
    assert as_report(report).results == ()
    emitted(logs, "first_seen_unrecorded", why="Connection reset by peer", containers=1)


def test_ghost_ticks_and_dry_runs_leave_the_dead_record_as_it_was(
    use_fake: list[FakeHost], redis_url: str
) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    dead = dataclasses.replace(container("dead", State.DEAD), started_at=None, finished_at=None)
    fake = FakeHost([dead])
    run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)  # first seen dead: now
    for minutes in (4, 8):
        fake.now = NOW + timedelta(minutes=minutes)
        run_tick(use_fake, fake, Task.KILL_GHOSTS, client)
        planned, _ = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client, dry_run=True)
        assert as_report(planned).results == ()
    fake.now = NOW + timedelta(minutes=11)
    planned, _ = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client, dry_run=True)
    assert as_report(planned).counts == {"planned": 1}
    removed, _ = run_tick(use_fake, fake, Task.REMOVE_STOPPED, client)
    assert as_report(removed).counts == {"done": 1}


def test_a_failed_inspect_of_the_janitors_own_container_sweeps_nothing(
    use_fake: list[FakeHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    own = container("janitor-worker", State.RUNNING)
    monkeypatch.setattr(tick, "own_container_ids", lambda: frozenset({own.id}))
    fake = FakeHost([own, container("old-exit")])
    fake.failures["inspect"] = ActionFailedError("inspect failed with 500: daemon busy")
    report, logs = run_tick(use_fake, fake, Task.REMOVE_STOPPED)
    assert as_report(report).status is Status.FAILED
    assert "daemon busy" in emitted(logs, "sweep_failed")[0]["error"]
    assert fake.calls["remove"] == 0
