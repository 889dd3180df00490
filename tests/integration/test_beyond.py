"""Beyond a timer, end to end: owner leases, keep-last-N and the stopped cap, spike pacing,
pressure response and the Prometheus endpoint, against real dockerd, Redis and Celery.

Waits are polls with deadlines. Where a bound on WHEN something happens is the feature (a lease
kill within a kill interval, a deferred sweep soon after a spike), it is derived from the
intervals and from what the janitor itself measures, with the slack spelled out.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families
from support.celery import reports, service_env, task_result, task_results
from support.cli import janitor_env, sweep_json
from support.containers import run_exited, run_running, state

from janitor import pressure
from janitor.children import free_port, wait_for
from janitor.lease import OwnerLease
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine

MANAGED = {"janitor.managed": "true"}
# Spike containers are not under the selector: only the planted ones are removal candidates.
SPIKE = {"janitor.test": "spike"}
EXIT_AT_ONCE = ("sh", "-c", "exit 0")
READY_STATES = {"SUCCESS", "FAILURE", "REVOKED"}
KILL_INTERVAL = 2.0  # support.celery.SERVICE
REMOVE_INTERVAL = 3.0  # support.celery.SERVICE
# A sweep that is due has a little longer than its tick to show: worker scheduling, the
# sweep's own Docker calls and a busy two-core test machine.
SLACK = 3.0


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def outcomes(report: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {a["id"]: (a["action"], a["reason"], a["outcome"]) for a in report["actions"]}


def finished_at(host: Engine, container_id: str) -> datetime:
    raw = host.api().inspect_container(container_id)["State"]["FinishedAt"]
    return datetime.fromisoformat(raw[:26].rstrip("Z") + "+00:00")


def all_final(redis_url: str) -> list[dict[str, Any]]:
    results = task_results(redis_url)
    return results if results and all(r["status"] in READY_STATES for r in results) else []


def actions_on(found: list[dict[str, Any]], container_id: str) -> list[tuple[str, str, str]]:
    return [
        (a["action"], a["reason"], a["outcome"])
        for report in found
        for a in report.get("actions", [])
        if a["id"] == container_id
    ]


@pytest.fixture
def lease_redis(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        yield client


# --- owner leases ---------------------------------------------------------------------------


def test_an_expired_owner_lease_gets_its_container_killed_at_the_next_kill_tick(
    alpha: Engine, redis_url: str, lease_redis: redis.Redis[bytes], procs: Processes
) -> None:
    env = service_env({"alpha": alpha.url}, redis_url, lease_grace="1s", max_runtime="1h")
    worker = procs.worker(env)
    procs.beat(env)
    worker.wait_ready()
    ttl = timedelta(seconds=3)
    forgotten = OwnerLease(lease_redis, "s1", ttl)
    renewed = OwnerLease(lease_redis, "s2", ttl)
    client = alpha.client()
    with renewed.kept_alive():
        before_create = datetime.now(UTC)
        forgotten.create()
        after_create = datetime.now(UTC)
        orphan = run_running(client, labels={**MANAGED, **forgotten.labels})
        owned = run_running(client, labels={**MANAGED, **renewed.labels})
        # Its owner never renews s1: it expires 3 s after creation. The containers started
        # just now, so the 1 s lease grace is over before that.
        killed = wait_for(
            lambda: [e for e in worker.events("action_done") if e["container_id"] == orphan],
            timeout=ttl.total_seconds() + KILL_INTERVAL + 15,
            what="the container of the expired lease to be killed",
            alive=procs.check_alive,
            details=worker.log_tail,
        )
        assert state(alpha, orphan) == "exited"
        assert killed[0]["reason"] == "owner_lease_expired"
        # Never before the lease was gone, and at the first kill tick after that.
        assert at(killed[0]) >= before_create + ttl
        assert at(killed[0]) - (after_create + ttl) <= timedelta(seconds=KILL_INTERVAL + SLACK)

        def kill_sweeps() -> int:
            return sum(e["task"] == "kill-ghosts" for e in worker.events("sweep_finished"))

        sweeps_then = kill_sweeps()
        wait_for(
            lambda: kill_sweeps() >= sweeps_then + 3,
            timeout=3 * KILL_INTERVAL + 20,
            what="three more kill intervals with the renewed lease",
            alive=procs.check_alive,
        )
        assert state(alpha, owned) == "running"
    # kept_alive released s2 at exit: its container is now a ghost too.
    released_at = datetime.now(UTC)
    wait_for(
        lambda: state(alpha, owned) == "exited",
        timeout=KILL_INTERVAL + 15,
        what="the container of the released lease to be killed",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    killed_owned = [e for e in worker.events("action_done") if e["container_id"] == owned]
    assert at(killed_owned[0]) - released_at <= timedelta(seconds=KILL_INTERVAL + SLACK)

    stored = wait_for(
        lambda: (
            (found := reports(task_results(redis_url)))
            and len(actions_on(found, owned)) == 1
            and found
        ),
        timeout=20,
        what="the reports of both kills",
        alive=procs.check_alive,
    )
    assert actions_on(stored, orphan) == [("kill", "owner_lease_expired", "done")]
    assert actions_on(stored, owned) == [("kill", "owner_lease_expired", "done")]


def test_cli_kills_for_a_dead_lease_only_past_the_grace_and_only_when_redis_answers(
    alpha: Engine, redis_url: str, lease_redis: redis.Redis[bytes]
) -> None:
    client = alpha.client()
    released = OwnerLease(lease_redis, "released", timedelta(minutes=5))
    released.create()
    orphan = run_running(client, labels={**MANAGED, **released.labels})
    released.release()
    # A key its owner has not written yet (or never will): no different from a dead one,
    # once the container has had its grace.
    unmade = run_running(client, labels={**MANAGED, "janitor.lease": "not-made-yet"})
    alive = OwnerLease(lease_redis, "alive", timedelta(hours=1))
    alive.create()
    owned = run_running(client, labels={**MANAGED, **alive.labels})
    time.sleep(1.5)  # past a 1 s lease grace
    hosts = {"alpha": alpha.url}
    running = {orphan: "running", unmade: "running", owned: "running"}

    # Redis unreachable: no lease can be read, so none counts as expired.
    blind = sweep_json(janitor_env(hosts, lease_grace="1s"), "--task", "kill-ghosts")
    assert blind.code == 0, blind.stderr
    assert outcomes(blind.report("alpha", "kill-ghosts")) == {}
    unchecked = [e for e in blind.log_events() if e["event"] == "owner_leases_unchecked"]
    assert [e["containers"] for e in unchecked] == [3], blind.stderr
    assert {c: state(alpha, c) for c in running} == running

    # Redis answers, but the containers started less than the grace ago: not killed yet.
    early = sweep_json(janitor_env(hosts, redis_url, lease_grace="1m"), "--task", "kill-ghosts")
    assert early.code == 0, early.stderr
    assert outcomes(early.report("alpha", "kill-ghosts")) == {}
    assert {c: state(alpha, c) for c in running} == running

    run = sweep_json(janitor_env(hosts, redis_url, lease_grace="1s"), "--task", "kill-ghosts")
    assert run.code == 0, run.stderr
    assert outcomes(run.report("alpha", "kill-ghosts")) == {
        orphan: ("kill", "owner_lease_expired", "done"),
        unmade: ("kill", "owner_lease_expired", "done"),
    }
    assert not [e for e in run.log_events() if e["event"] == "owner_leases_unchecked"]
    assert (state(alpha, orphan), state(alpha, unmade), state(alpha, owned)) == (
        "exited",
        "exited",
        "running",
    )


# --- keep-last-N and the stopped cap --------------------------------------------------------


def test_keep_last_keeps_exactly_the_newest_n_of_each_group(alpha: Engine) -> None:
    client = alpha.client()
    # Interleaved, so that neither creation order nor group decides; one by one, so every
    # container has a finish time of its own.
    order = ["a", "b", None, "a", "a", "b", "a", None, "b", "a"]
    planted: list[tuple[str | None, str]] = []
    for group in order:
        labels = {**MANAGED, "janitor.group": group} if group else MANAGED
        planted.append((group, run_exited(client, labels=labels)))
        time.sleep(0.05)
    finished = {c: finished_at(alpha, c) for _, c in planted}
    assert len(set(finished.values())) == len(planted)
    kept: set[str] = set()
    for group in ("a", "b"):
        members = [c for g, c in planted if g == group]
        kept |= set(sorted(members, key=finished.__getitem__)[-2:])
    time.sleep(1.5)  # every one past a 1 s grace

    env = janitor_env({"alpha": alpha.url}, stopped_grace="1s", keep_last="2")
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 0, run.stderr
    removed = {c for _, c in planted} - kept
    assert outcomes(run.report("alpha", "remove-stopped")) == {
        c: ("remove", "exited_past_grace", "done") for c in removed
    }
    assert {c: state(alpha, c) for _, c in planted} == {
        c: "exited" if c in kept else "gone" for _, c in planted
    }
    # The kept ones stay kept, however often the sweep runs.
    again = sweep_json(env, "--task", "remove-stopped")
    assert outcomes(again.report("alpha", "remove-stopped")) == {}
    assert {c for c in kept if state(alpha, c) == "exited"} == kept


def test_keep_last_ranks_by_finish_time_whatever_each_member_s_own_grace(alpha: Engine) -> None:
    client = alpha.client()
    group = {**MANAGED, "janitor.group": "g"}
    # Finished first, but its own grace (1h) keeps it out of the candidates the list call
    # picks: it must still count as older than the one that finished after it.
    patient = run_exited(client, labels={**group, "janitor.stopped-grace": "1h"})
    time.sleep(0.05)
    newest = run_exited(client, labels=group)
    time.sleep(1.5)

    env = janitor_env({"alpha": alpha.url}, stopped_grace="1s", keep_last="1")
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 0, run.stderr
    assert outcomes(run.report("alpha", "remove-stopped")) == {}
    assert (state(alpha, patient), state(alpha, newest)) == ("exited", "exited")

    # The other way round: the default grace is the long one, a label the short one.
    hasty = run_exited(client, labels={**group, "janitor.stopped-grace": "1s"})
    time.sleep(1.5)
    env = janitor_env({"alpha": alpha.url}, stopped_grace="1h", keep_last="1")
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 0, run.stderr
    assert outcomes(run.report("alpha", "remove-stopped")) == {}
    assert state(alpha, hasty) == "exited"


def test_max_stopped_removes_the_oldest_first_even_within_their_grace(alpha: Engine) -> None:
    client = alpha.client()
    # The oldest of all, but protected: neither counted nor removed.
    protected = run_exited(client, labels={**MANAGED, "janitor.protect": "true"})
    young = []
    for _ in range(10):
        young.append(run_exited(client, labels=MANAGED))
        time.sleep(0.05)
    oldest_first = sorted(young, key=lambda c: finished_at(alpha, c))

    env = janitor_env({"alpha": alpha.url}, stopped_grace="1h", max_stopped="4")
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 0, run.stderr
    assert outcomes(run.report("alpha", "remove-stopped")) == {
        c: ("remove", "over_max_stopped", "done") for c in oldest_first[:6]
    }
    assert [state(alpha, c) for c in oldest_first] == ["gone"] * 6 + ["exited"] * 4
    assert state(alpha, protected) == "exited"
    again = sweep_json(env, "--task", "remove-stopped")
    assert outcomes(again.report("alpha", "remove-stopped")) == {}


# --- spike-aware pacing ---------------------------------------------------------------------

SPIKE_RATE = 60  # starts per minute: JANITOR_SPIKE_RATE
SPIKE_PACE = 2.5  # starts per second the spike aims at: 150 a minute, well above the threshold


class Spike:
    """Short-lived unmanaged containers started at a steady pace from a few threads (one
    start takes a fraction of a second, more on a busy machine), until stopped."""

    def __init__(self, url: str, per_second: float = SPIKE_PACE, threads: int = 3) -> None:
        self.url = url
        self.per_second = per_second
        self.starts: list[datetime] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._began = 0.0
        self._threads = [
            threading.Thread(target=self._run, name=f"spike-{n}", daemon=True)
            for n in range(threads)
        ]

    def __enter__(self) -> Spike:
        self._began = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        assert not self.errors, self.errors

    @property
    def last(self) -> datetime:
        return max(self.starts)

    def describe(self) -> str:
        if len(self.starts) < 2:
            return f"spike: {len(self.starts)} starts"
        span = (self.last - min(self.starts)).total_seconds()
        return f"spike: {len(self.starts)} starts over {span:.1f} s"

    def _claim(self) -> int:
        with self._lock:
            self._next += 1
            return self._next - 1

    def _run(self) -> None:
        client = docker.DockerClient(base_url=self.url, timeout=30)
        try:
            while not self._stop.is_set():
                due = self._began + self._claim() / self.per_second
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                run_running(client, labels=SPIKE, command=EXIT_AT_ONCE)
                self.starts.append(datetime.now(UTC))
        except (docker.errors.DockerException, OSError) as exc:  # raised by stop()
            self.errors.append(exc)
        finally:
            client.close()


def remove_sweeps(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "sweep_finished" and e["task"] == "remove-stopped"]


def test_a_spawn_spike_defers_the_stopped_sweep_until_the_spike_is_over(
    beta: Engine, redis_url: str, procs: Processes
) -> None:
    port = free_port()
    env = service_env(
        {"beta": beta.url},
        redis_url,
        spike_rate=str(SPIKE_RATE),
        max_defer="2m",
        stopped_grace="1s",
        max_runtime="1h",
        metrics_port=str(port),
    )
    worker = procs.worker(env)
    procs.beat(env)
    worker.wait_ready()
    with Spike(beta.url) as spike:
        wait_for(
            lambda: worker.events("sweep_deferred"),
            timeout=40,
            what="the stopped sweep to be deferred by the spike",
            alive=procs.check_alive,
            details=lambda: f"{spike.describe()}\n{worker.log_tail()}",
        )
        planted = [run_exited(beta.client(), labels=MANAGED) for _ in range(3)]
        eligible_at = datetime.now(UTC) + timedelta(seconds=1)
        # Two more ticks with the planted containers past their grace, both deferred.
        wait_for(
            lambda: len([e for e in worker.events("sweep_deferred") if at(e) > eligible_at]) >= 2,
            timeout=8 * REMOVE_INTERVAL,
            what="two deferrals while the planted containers are eligible",
            alive=procs.check_alive,
            details=lambda: f"{spike.describe()}\n{worker.log_tail()}",
        )
        spike.stop()
        assert {c: state(beta, c) for c in planted} == {c: "exited" for c in planted}
    last = spike.last

    def removals() -> list[dict[str, Any]]:
        done = [e for e in worker.events("action_done") if e["container_id"] in planted]
        return done if len(done) == len(planted) else []

    removed = wait_for(
        removals,
        timeout=2 * REMOVE_INTERVAL + 20,
        what="the planted containers removed once the spike is over",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    removed_at = min(at(e) for e in removed)
    # Not while the follower saw the spike on; at once when it saw it end.
    ended = at(worker.events("spike_ended")[-1])
    assert ended > last, (ended, last)
    assert ended <= removed_at <= ended + timedelta(seconds=SLACK), (removed_at, ended, last)
    assert {e["reason"] for e in removed} == {"exited_past_grace"}
    events = worker.events()
    # Every stopped sweep between the first deferral and the end of the spike was deferred.
    first_deferral = at(worker.events("sweep_deferred")[0])
    assert not [e for e in remove_sweeps(events) if first_deferral <= at(e) <= last]
    assert all(e["spawn_rate_per_min"] > 0 for e in worker.events("sweep_deferred"))
    assert all(e["threshold"] == SPIKE_RATE for e in worker.events("sweep_deferred"))

    # The sweep that removed them, and the deferred ticks, as the result backend shows them.
    results = wait_for(
        lambda: (
            (found := task_results(redis_url)) and actions_on(reports(found), planted[0]) and found
        ),
        timeout=20,
        what="the report of the sweep that removed them",
    )
    deferred = [r["result"] for r in results if (r["result"] or {}).get("status") == "deferred"]
    assert deferred
    for report in deferred:
        assert report["task"] == "remove-stopped"
        assert report["host"] == "beta"
        assert report["spawn_rate_per_min"] > 0
    sweep = [r for r in reports(results) if actions_on([r], planted[0])]
    assert len(sweep) == 1
    assert sweep[0]["status"] == "ok"
    assert sweep[0]["spawn_rate_per_min"] <= SPIKE_RATE
    assert "forced" not in sweep[0]
    assert outcomes(sweep[0]) == {c: ("remove", "exited_past_grace", "done") for c in planted}

    # The deferrals the endpoint counted are the deferred results: the spike is over, no more.
    samples = scrape(port)
    assert samples[("janitor_deferrals_total", (("host", "beta"),))] == len(deferred)
    assert samples[("janitor_sweep_deferred", (("host", "beta"),))] == 0


def test_a_spike_that_never_ends_cannot_put_cleaning_off_past_max_defer(
    beta: Engine, redis_url: str, procs: Processes
) -> None:
    env = service_env(
        {"beta": beta.url},
        redis_url,
        spike_rate=str(SPIKE_RATE),
        max_defer="10s",
        stopped_grace="1s",
        max_runtime="1h",
    )
    worker = procs.worker(env)
    procs.beat(env)
    worker.wait_ready()
    with Spike(beta.url) as spike:
        wait_for(
            lambda: worker.events("sweep_deferred"),
            timeout=40,
            what="the stopped sweep to be deferred by the spike",
            alive=procs.check_alive,
            details=lambda: f"{spike.describe()}\n{worker.log_tail()}",
        )
        planted = [run_exited(beta.client(), labels=MANAGED) for _ in range(3)]
        wait_for(
            lambda: all(state(beta, c) == "gone" for c in planted),
            timeout=10 + 2 * REMOVE_INTERVAL + 30,
            what="the planted containers removed by a forced sweep",
            alive=procs.check_alive,
            details=lambda: f"{spike.describe()}\n{worker.log_tail()}",
        )
        # The spike goes on, and so does pacing: the next tick is deferred again.
        forced = wait_for(
            lambda: worker.events("sweep_forced"),
            timeout=10,
            what="the forced sweep's log line",
        )
        wait_for(
            lambda: [e for e in worker.events("sweep_deferred") if at(e) > at(forced[-1])],
            timeout=4 * REMOVE_INTERVAL + 10,
            what="a deferral after the forced sweep",
            alive=procs.check_alive,
            details=lambda: f"{spike.describe()}\n{worker.log_tail()}",
        )
        removed = [e for e in worker.events("action_done") if e["container_id"] in planted]
        removed_at = max(at(e) for e in removed)
        # Removed during the spike: it goes on after them (a loaded daemon may stall its
        # starts for a moment, so the next one may still be on its way).
        wait_for(
            lambda: spike.last > removed_at,
            timeout=15,
            what="a spike start after the forced removals",
            details=spike.describe,
        )
    first_deferral = at(worker.events("sweep_deferred")[0])
    assert at(forced[0]) - first_deferral >= timedelta(seconds=10)
    assert forced[0]["deferred_s"] >= 10
    assert forced[0]["spawn_rate_per_min"] > 0

    removal = ("remove", "exited_past_grace", "done")
    results = wait_for(
        lambda: (
            (found := task_results(redis_url))
            and removal in actions_on(reports(found), planted[0])
            and found
        ),
        timeout=20,
        what="the report of the forced sweep",
    )
    sweeps = [r for r in reports(results) if actions_on([r], planted[0])]
    sweep = [r for r in sweeps if removal in actions_on([r], planted[0])]
    assert len(sweep) == 1
    # A dip in the spike may let a sweep start; it yields as soon as the spike is back, and
    # the deferral's clock runs on.
    for other in sweeps:
        if other is not sweep[0]:
            assert {a["detail"] for a in other["actions"]} == {"yielded_to_spike"}
    assert sweep[0]["forced"] is True
    assert sweep[0]["status"] == "ok"
    assert sweep[0]["spawn_rate_per_min"] > 0
    assert sweep[0]["deferred_s"] >= 10
    assert outcomes(sweep[0]) == {c: ("remove", "exited_past_grace", "done") for c in planted}


# --- pressure response ----------------------------------------------------------------------

CPU_LINE = "cpu  1000 0 500 90000 100 0 0 0 0 0\n"


def fake_proc(root: Path, used: float) -> None:
    """A /proc with `used` of its memory in use and an idle CPU, swapped in whole."""
    root.mkdir(exist_ok=True)
    total = 4_000_000
    meminfo = (
        f"MemTotal:       {total} kB\n"
        f"MemFree:        {int(total * (1 - used) / 2)} kB\n"
        f"MemAvailable:   {int(total * (1 - used))} kB\n"
    )
    for name, text in (("meminfo", meminfo), ("stat", CPU_LINE)):
        scratch = root / f".{name}.new"
        scratch.write_text(text)
        os.replace(scratch, root / name)


@pytest.fixture
def empty_root(tmp_path: Path) -> Iterator[Path]:
    """An empty 4 MiB tmpfs standing in for the Docker root filesystem: the pressure is then
    the fake /proc's alone. The private daemon's own root is on the machine's disk, whose
    share in use may sit anywhere (0.707 in a Debian 13 chroot, where blocks reserved for
    another user count as used for the janitor: statvfs f_bavail)."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_pressure_starts_early_tightened_sweeps_until_relieved(
    alpha: Engine, redis_url: str, procs: Processes, tmp_path: Path, empty_root: Path
) -> None:
    proc_root = tmp_path / "proc"
    fake_proc(proc_root, used=0.9)
    env = service_env(
        {"alpha": alpha.url},
        redis_url,
        pressure_high="0.8",
        pressure_low="0.7",
        pressure_grace_floor="1s",
        proc_root=str(proc_root),
        docker_root=str(empty_root),
        stopped_grace="1h",
        remove_interval="10m",
        max_runtime="1h",
    )
    client = alpha.client()
    old = run_exited(client, labels=MANAGED)
    # A container's own grace is honoured as written, pressure or not.
    labelled = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "1h"})
    worker = procs.worker(env)
    procs.beat(env)

    wait_for(
        lambda: state(alpha, old) == "gone",
        timeout=40,
        what="the exited container removed by an early sweep under pressure",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    high = worker.events("pressure_high")
    assert len(high) == 1
    assert (high[0]["memory"], high[0]["cpu"]) == (0.9, 0.0)
    started = worker.events("pressure_sweep_started")
    assert started
    assert at(started[0]) >= at(high[0])
    assert state(alpha, labelled) == "exited"

    # Between the watermarks the episode goes on: early sweeps still start.
    fake_proc(proc_root, used=0.75)
    between = datetime.now(UTC) + timedelta(seconds=0.5)
    wait_for(
        lambda: len([e for e in worker.events("pressure_sweep_started") if at(e) > between]) >= 2,
        timeout=4 * KILL_INTERVAL + 15,
        what="early sweeps while between the watermarks",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    assert not worker.events("pressure_relieved")

    fake_proc(proc_root, used=0.5)
    relieved = wait_for(
        lambda: worker.events("pressure_relieved"),
        timeout=2 * KILL_INTERVAL + 15,
        what="the pressure to be relieved",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    assert (relieved[0]["memory"], relieved[0]["low"]) == (0.5, 0.7)
    later = run_exited(client, labels=MANAGED)
    relieved_at = at(relieved[0])

    def kill_sweeps_since() -> int:
        return sum(
            e["task"] == "kill-ghosts" and at(e) > relieved_at
            for e in worker.events("sweep_finished")
        )

    wait_for(
        lambda: kill_sweeps_since() >= 3,
        timeout=3 * KILL_INTERVAL + 15,
        what="three kill ticks after relief",
        alive=procs.check_alive,
    )
    # A reading taken just before the new file can log a moment after another process logged
    # the relief; none comes later than that.
    assert not [
        e
        for e in worker.events("pressure_sweep_started")
        if at(e) > relieved_at + timedelta(seconds=1)
    ]

    # A stopped sweep now keeps the configured grace (1h) again.
    celery_client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        task_id = celery_client.send_task(
            "janitor.remove_stopped", args=["alpha"], queue="janitor.alpha"
        ).id
    finally:
        celery_client.close()
    result = wait_for(
        lambda: (r := task_result(redis_url, task_id)) and r["status"] in READY_STATES and r,
        timeout=30,
        what="the stopped sweep sent after relief",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    assert result["status"] == "SUCCESS", result
    assert result["result"]["status"] == "ok"
    assert result["result"]["actions"] == []
    assert "under_pressure" not in result["result"]
    assert (state(alpha, later), state(alpha, labelled)) == ("exited", "exited")

    results = task_results(redis_url)
    tightened = [r for r in reports(results) if r.get("under_pressure")]
    assert tightened
    assert all(r["task"] == "remove-stopped" for r in tightened)
    # The early sweeps removed the one container past the floor, and only it.
    assert [outcomes(r) for r in reports(results) if r["actions"]] == [
        {old: ("remove", "exited_past_grace", "done")}
    ]


def test_pressure_read_from_the_real_proc_reaches_the_worker_log(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    # Any real machine uses more than 1% of its memory: "under pressure" at the first tick.
    env = service_env({"alpha": alpha.url}, redis_url, pressure_high="0.01", pressure_low="0.005")
    worker = procs.worker(env)
    procs.beat(env)
    high = wait_for(
        lambda: worker.events("pressure_high"),
        timeout=40,
        what="a pressure reading of this machine",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    mine = pressure.read(Path("/proc"))
    assert high[0]["host"] == "alpha"
    assert 0.01 <= high[0]["memory"] <= 1
    assert 0 <= high[0]["cpu"] <= 1
    assert abs(high[0]["memory"] - mine.memory) < 0.2, (high[0], mine)
    wait_for(
        lambda: worker.events("pressure_sweep_started"),
        timeout=2 * KILL_INTERVAL + 15,
        what="an early stopped sweep",
        alive=procs.check_alive,
    )


# --- metrics --------------------------------------------------------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the worker's /metrics: (name, sorted labels) -> value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_metrics_endpoint_sums_what_every_pool_process_reported(
    alpha: Engine, beta: Engine, redis_url: str, procs: Processes, tmp_path: Path
) -> None:
    port = free_port()
    # Given, not made by the worker: the test can see which processes wrote to it.
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **service_env(
            {"alpha": alpha.url, "beta": beta.url},
            redis_url,
            max_runtime="1s",
            stopped_grace="1s",
            metrics_port=str(port),
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    planted: dict[str, list[str]] = {}
    for host in (alpha, beta):
        client = host.client()
        planted[host.name] = [
            run_running(client, labels={**MANAGED, "janitor.stopped-grace": "1h"}),
            run_running(client, labels={**MANAGED, "janitor.stopped-grace": "1h"}),
            run_exited(client, labels=MANAGED),
            run_exited(client, labels=MANAGED),
            run_exited(client, labels=MANAGED),
            # Refused at every kill tick: a count that grows with the ticks.
            run_running(client, labels={**MANAGED, "janitor.max-runtime": "soon"}),
        ]
    worker = procs.worker(env, concurrency=2)
    beat = procs.beat(env)

    def cleaned() -> bool:
        return all(
            [state(h, c) for c in planted[h.name][:5]] == ["exited"] * 2 + ["gone"] * 3
            for h in (alpha, beta)
        )

    wait_for(cleaned, timeout=40, what="both hosts cleaned", alive=procs.check_alive)

    def writers() -> set[str]:
        return {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}

    wait_for(
        lambda: len(writers()) >= 2 and len(worker.events("sweep_finished")) >= 12,
        timeout=40,
        what="sweeps in both pool processes",
        alive=procs.check_alive,
        details=lambda: f"{writers()}\n{worker.log_tail()}",
    )
    beat.stop()
    results = wait_for(lambda: all_final(redis_url), timeout=30, what="every tick's final result")
    found = reports(results)
    samples = scrape(port)

    actions: Counter[tuple[str, str, str]] = Counter()
    sweeps: Counter[tuple[str, str, str]] = Counter()
    for report in found:
        sweeps[(report["host"], report["task"], report["status"])] += 1
        for outcome, count in report["counts"].items():
            actions[(report["host"], report["task"], outcome)] += count
    for result in results:
        if result["status"] == "SUCCESS" and result["result"]["status"] == "skipped":
            sweeps[(result["result"]["host"], result["result"]["task"], "skipped")] += 1
    assert actions[("alpha", "kill-ghosts", "refused")] >= 3

    def exposed(name: str, *labels: str) -> Counter[tuple[str, ...]]:
        return Counter(
            {
                tuple(dict(pairs)[label] for label in labels): value
                for (sample, pairs), value in samples.items()
                if sample == name and value
            }
        )

    assert exposed("janitor_actions_total", "host", "task", "outcome") == actions
    assert exposed("janitor_sweeps_total", "host", "task", "status") == sweeps
    durations = exposed("janitor_sweep_duration_seconds_count", "host", "task")
    assert durations == Counter(
        {(h, t): n for (h, t, status), n in sweeps.items() if status != "skipped"}
    )
    managed = {labels for (name, labels) in samples if name == "janitor_managed_containers"}
    for host in ("alpha", "beta"):
        for managed_state in ("running", "exited", "created"):
            assert (("host", host), ("state", managed_state)) in managed, managed
    # The totals are sums over the pool: more than one process recorded them.
    assert len(writers()) >= 2
