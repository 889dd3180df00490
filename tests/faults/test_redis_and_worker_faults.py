"""Redis that dies, workers that are killed, ticks that arrive twice (issue 5).

What must hold: worker and beat outlive a Redis crash and sweep again within a few intervals;
a sweep whose lease went with Redis stops before its next destructive action; a killed worker
leaves no lease behind for longer than its TTL and nothing is replayed; however often a tick
is delivered, each container is acted on once; protected and unmanaged containers survive.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from support.bystanders import plant_bystanders
from support.celery import reports, service_env, task_results
from support.containers import run_exited, run_running

from janitor.children import wait_for
from janitor.keys import sweep_lease
from janitor.model import Status, Task
from janitor.settings import Settings
from janitor.tick import sweep_host
from sandbox.celery_processes import CeleryProcess, Processes
from sandbox.daemons import Engine
from sandbox.procfs import children, is_alive
from sandbox.redisserver import PrivateRedis

MANAGED = {"janitor.managed": "true"}
# Kept once killed, so a kill stays visible as `exited` instead of turning into a removal.
GHOST = {**MANAGED, "janitor.stopped-grace": "1h"}
AGED = {"max_runtime": "1s", "stopped_grace": "1s"}
# The ghosts ignore SIGTERM: with a stop timeout of 1s, one kill at a time takes a second,
# so a test can strike while a sweep is between its first and its last kill.
SLOW_KILLS = {"stop_timeout": "1s", "concurrency": "1"}
RECEIVED = re.compile(r"Task (janitor\.\w+)\[([^\]]+)\] received")


def states(host: Engine, ids: Iterable[str]) -> dict[str, str]:
    """Each container's state, or "gone", from one list call: cheap enough to poll."""
    listed = {c["Id"]: c["State"] for c in host.api().containers(all=True)}
    return {c: listed.get(c, "gone") for c in ids}


def count(host: Engine, ids: Iterable[str], state: str) -> int:
    return sum(s == state for s in states(host, ids).values())


def at(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def received_ids(worker: CeleryProcess, name: str = "janitor.kill_ghosts") -> list[str]:
    return [
        m.group(2)
        for e in worker.events()
        if (m := RECEIVED.fullmatch(e["event"])) and m.group(1) == name
    ]


def done_per_container(*workers: CeleryProcess) -> Counter[str]:
    return Counter(e["container_id"] for w in workers for e in w.events("action_done"))


def get(client: redis.Redis[bytes], key: str) -> str | None:
    value = client.get(key)
    return None if value is None else value.decode()


def plant_ghosts(host: Engine, ghosts: int) -> tuple[list[str], dict[str, str]]:
    client = host.client()
    return [run_running(client, labels=GHOST) for _ in range(ghosts)], plant_bystanders(client)


def wait_aged(planted_at: float, age: float = 1.5) -> None:
    """Until the youngest container planted is past the 1 s budgets of AGED."""
    wait_for(lambda: time.monotonic() - planted_at > age, timeout=age + 1, what="ages")


# -- 3. Redis killed under a running service ---------------------------------------------------


@pytest.mark.parametrize("persistence", [False, True], ids=["no-persistence", "persistence"])
def test_redis_killed_mid_sweep_stops_it_and_the_service_recovers(
    alpha: Engine, tmp_path: Path, persistence: bool
) -> None:
    interval = 8
    key = sweep_lease("alpha", "kill-ghosts")
    # Its own Redis, stopped only after the Celery processes that use it.
    with PrivateRedis(persistence=persistence) as server, Processes(tmp_path) as procs:
        client = server.client()
        env = service_env(
            {"alpha": alpha.url},
            server.url,
            **AGED,
            **SLOW_KILLS,
            kill_interval=f"{interval}s",
            remove_interval="3s",
        )
        worker = procs.worker(env)
        ghosts, keep = plant_ghosts(alpha, 8)
        worker.wait_ready()
        beat = procs.beat(env)

        wait_for(
            lambda: count(alpha, ghosts, "exited") >= 1,
            timeout=3 * interval,
            what="the first kill",
            interval=0.05,
            alive=procs.check_alive,
        )
        holder = get(client, key)
        assert holder is not None, "the sweep under way holds no lease"
        # Before the kill: the worker may notice it before kill() has reaped the server.
        killed_at = datetime.now(UTC)
        server.kill()

        halted = wait_for(
            lambda: [
                e
                for e in worker.events("sweep_finished")
                if e["task"] == "kill-ghosts" and at(e) > killed_at
            ],
            timeout=2 * interval,
            what="the sweep under way to end",
            alive=procs.check_alive,
            details=worker.log_tail,
        )[0]
        # Only the kill in flight when Redis went finished; then it stopped acting.
        still_running = count(alpha, ghosts, "running")
        assert halted["status"] == "failed", halted
        assert halted["counts"].get("done", 0) <= 2, halted
        assert still_running >= len(ghosts) - 2
        why = [e["why"] for e in worker.events("sweep_halted") if at(e) > killed_at]
        assert why, worker.log_tail()
        assert "Redis unreachable" in why[0] or "expired or was taken over" in why[0], why
        lost = [
            e
            for e in worker.events("action_refused")
            if at(e) > killed_at and e.get("detail") == "lease_lost"
        ]
        assert len(lost) == 1, lost

        server.start()
        restarted_at = datetime.now(UTC)
        # A dry run in this process: it takes the same lease as the service, changes nothing.
        probe = Settings(
            hosts=f"alpha={alpha.url}",  # type: ignore[arg-type]
            redis_url=server.url,
            dry_run=True,
        )
        if persistence:
            # The lease came back with Redis, with what was left of its TTL: it still keeps
            # other sweeps of alpha's ghosts out until it expires, then frees itself.
            assert get(client, key) == holder
            assert 0 < client.pttl(key) <= interval * 1000
            skipped = sweep_host(probe, "alpha", Task.KILL_GHOSTS, redis_client=client)
            assert skipped.status is Status.SKIPPED
            wait_for(
                lambda: get(client, key) != holder,
                timeout=interval,
                what="the surviving lease to expire",
            )
        else:
            # Gone with the data: the next sweep may take it at once.
            assert get(client, key) != holder
            report = sweep_host(probe, "alpha", Task.KILL_GHOSTS, redis_client=client)
            assert report.status is Status.OK

        # Sweeping resumes: the ghosts left are killed, stopped containers planted now are
        # removed, within a few intervals of the restart.
        exited = [run_exited(alpha.client(), labels=MANAGED) for _ in range(2)]
        wait_for(
            lambda: (
                set(states(alpha, ghosts).values()) == {"exited"}
                and set(states(alpha, exited).values()) == {"gone"}
            ),
            timeout=4 * interval,
            what="every ghost killed and the new stopped ones removed",
            alive=procs.check_alive,
            details=lambda: str(states(alpha, [*ghosts, *exited])),
        )
        assert [
            e
            for e in worker.events()
            if e["event"].startswith("consumer: Connection to broker lost") and at(e) > killed_at
        ], "the worker never noticed Redis go"
        assert [e for e in beat.sent_ticks("kill-ghosts:alpha") if at(e) > restarted_at]
        resumed = [
            e
            for e in worker.events("sweep_finished")
            if at(e) > restarted_at and e["counts"].get("done")
        ]
        assert {e["task"] for e in resumed} == {"kill-ghosts", "remove-stopped"}
        assert {e["status"] for e in resumed} == {"ok"}
        done = done_per_container(worker)
        assert max(done.values()) == 1, done
        assert set(done) <= {*ghosts, *exited}
        assert states(alpha, keep) == keep


# -- 4. Worker processes killed mid-sweep -----------------------------------------------------


def strike_mid_sweep(
    alpha: Engine,
    ghosts: list[str],
    worker: CeleryProcess,
    client: redis.Redis[bytes],
    procs: Processes,
    *,
    timeout: float,
) -> tuple[int, str]:
    """Once the next ghost is killed and logged, the pool child sweeping and its lease."""
    exited_before = {c for c, s in states(alpha, ghosts).items() if s == "exited"}
    killed = wait_for(
        lambda: {c for c, s in states(alpha, ghosts).items() if s == "exited"} - exited_before,
        timeout=timeout,
        what="a kill",
        interval=0.05,
        alive=procs.check_alive,
        details=lambda: "\n\n".join(p.log_tail() for p in procs.started),
    )
    # What a sweep changed is on record at once, not at its end, which a killed worker
    # never reaches.
    wait_for(
        lambda: killed <= {e["container_id"] for e in worker.events("action_done")},
        timeout=2,
        what="the kill logged while the sweep goes on",
        interval=0.05,
    )
    (child,) = children(worker.pid)
    holder = get(client, sweep_lease("alpha", "kill-ghosts"))
    assert holder is not None, "the sweep under way holds no lease"
    assert f":{child}:" in holder, holder
    return child, holder


def expect_expiry(client: redis.Redis[bytes], holder: str, ttl: int) -> None:
    """The lease of a killed sweep is still there, for no longer than its TTL."""
    key = sweep_lease("alpha", "kill-ghosts")
    assert 0 < client.pttl(key) <= ttl * 1000
    wait_for(lambda: get(client, key) != holder, timeout=ttl, what="the dead sweep's lease to go")


def test_killed_worker_leaves_no_stuck_lease_and_nothing_is_replayed(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    interval = 6
    # The stopped sweep's first tick would come after the test: only ghost ticks are counted.
    env = service_env(
        {"alpha": alpha.url}, redis_url, **AGED, **SLOW_KILLS, kill_interval=f"{interval}s"
    )
    env["JANITOR_REMOVE_INTERVAL"] = "10m"
    first = procs.worker(env, "worker-1", concurrency=1)
    ghosts, keep = plant_ghosts(alpha, 6)
    first.wait_ready()
    beat = procs.beat(env)
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        # The pool child, mid-sweep: the main process forks a new one.
        child, holder = strike_mid_sweep(alpha, ghosts, first, client, procs, timeout=4 * interval)
        os.kill(child, signal.SIGKILL)
        expect_expiry(client, holder, interval)

        # Then the main process, mid-sweep of its new child.
        child, holder = strike_mid_sweep(alpha, ghosts, first, client, procs, timeout=3 * interval)
        os.kill(first.pid, signal.SIGKILL)
        first.stopped = True
        killed_at = datetime.now(UTC)
        # Celery's pool children die with their parent: no sweep goes on without a worker.
        wait_for(lambda: not is_alive(child), timeout=5, what="the orphaned child to die")
        expect_expiry(client, holder, interval)
    finally:
        client.close()

    second = procs.worker(env, "worker-2", concurrency=1)
    wait_for(
        lambda: set(states(alpha, ghosts).values()) == {"exited"},
        timeout=5 * interval,
        what="the new worker to kill the remaining ghosts",
        alive=procs.check_alive,
        details=lambda: str(states(alpha, ghosts)),
    )
    # No replay: the new worker runs only ticks it never saw before, no more of them than
    # beat sent since the old one died.
    fresh = received_ids(second)
    ticks_since = [e for e in beat.sent_ticks("kill-ghosts:alpha") if at(e) > killed_at]
    assert fresh
    assert not set(fresh) & set(received_ids(first))
    assert len(fresh) == len(set(fresh))
    assert len(fresh) <= len(ticks_since), (fresh, ticks_since)
    swept = [e for e in second.events("sweep_finished") if e["task"] == "kill-ghosts"]
    assert len(swept) + len(second.events("sweep_skipped")) <= len(fresh)
    assert {e["status"] for e in swept} == {"ok"}
    done = done_per_container(first, second)
    assert max(done.values()) == 1, done
    assert set(done) <= set(ghosts)
    # Unlogged: at most the kill in flight at each of the two SIGKILLs, which dockerd finished.
    assert len(ghosts) - len(done) <= 2, done
    assert states(alpha, keep) == keep
    # The task of the killed child is reported lost (billiard waits 10 s for its result); that
    # of the killed main process stays STARTED: neither is run again.
    lost = wait_for(
        lambda: [
            r
            for r in task_results(redis_url)
            if r["status"] == "FAILURE" and r["result"]["exc_type"] == "WorkerLostError"
        ],
        timeout=15,
        what="the killed task to be reported lost",
    )
    assert len(lost) == 1


# -- 5. Duplicate ticks ------------------------------------------------------------------------


def test_duplicate_ticks_act_on_each_container_once(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    # Each kill takes two seconds (the ghosts ignore SIGTERM), so duplicates delivered at
    # once meet the first one's lease; later ones find nothing left to do.
    interval = 5
    env = service_env(
        {"alpha": alpha.url},
        redis_url,
        **AGED,
        stop_timeout="2s",
        kill_interval=f"{interval}s",
        remove_interval="3s",
    )
    client = alpha.client()
    ghosts, keep = plant_ghosts(alpha, 3)
    exited = [run_exited(client, labels=MANAGED) for _ in range(6)]
    wait_aged(time.monotonic())

    # Before any worker runs: one tick published twice under the same id, the raw message
    # pushed once more (a broker redelivery), and a stopped tick sent twice at once.
    celery_client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        ghost_tick = "duplicate-ghost-tick"
        for _ in range(2):
            celery_client.send_task(
                "janitor.kill_ghosts", args=["alpha"], queue="janitor.alpha", task_id=ghost_tick
            )
        barrier = threading.Barrier(2)

        def send_stopped_tick() -> None:
            barrier.wait()
            celery_client.send_task("janitor.remove_stopped", args=["alpha"], queue="janitor.alpha")

        senders = [threading.Thread(target=send_stopped_tick) for _ in range(2)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    finally:
        celery_client.close()
    with redis.Redis.from_url(redis_url, socket_timeout=5) as broker:
        raw = broker.lrange("janitor.alpha", 0, -1)
        assert len(raw) == 4
        redelivered = next(m for m in raw if ghost_tick.encode() in m)
        broker.lpush("janitor.alpha", redelivered)

    worker = procs.worker(env)
    worker.wait_ready()
    beats = [procs.beat(env, "beat-1"), procs.beat(env, "beat-2")]
    wait_for(
        lambda: (
            set(states(alpha, ghosts).values()) == {"exited"}
            and set(states(alpha, exited).values()) == {"gone"}
        ),
        timeout=6 * interval,
        what="every ghost killed and every stopped container removed",
        alive=procs.check_alive,
        details=lambda: str(states(alpha, [*ghosts, *exited])),
    )
    wait_for(
        lambda: all(len(b.sent_ticks("kill-ghosts:alpha")) >= 2 for b in beats),
        timeout=4 * interval,
        what="two ghost ticks from each beat",
        alive=procs.check_alive,
    )
    for beat in beats:
        beat.stop()
    ticks = 5 + sum(len(b.sent_ticks()) for b in beats)
    wait_for(
        lambda: handled(worker) >= ticks,
        timeout=6 * interval,
        what=f"all {ticks} ticks handled",
        alive=procs.check_alive,
        details=worker.log_tail,
    )

    assert received_ids(worker).count(ghost_tick) == 3
    assert worker.events("sweep_skipped"), "no duplicate met a held lease"
    expected = Counter({c: 1 for c in [*ghosts, *exited]})
    assert done_per_container(worker) == expected
    # The backend keeps one result per task id, and Celery never overwrites a success: of the
    # three copies of the ghost tick only the first to finish is there (whichever it was).
    in_reports = Counter(_done_ids(reports(task_results(redis_url))))
    assert in_reports <= expected
    assert set(expected) - set(in_reports) <= set(ghosts)
    assert states(alpha, keep) == keep


def handled(worker: CeleryProcess) -> int:
    """Ticks the worker is through with: swept, skipped for a held lease, or expired."""
    return sum(
        e["event"] in ("sweep_finished", "sweep_skipped")
        or e["event"].startswith("Discarding revoked task")
        for e in worker.events()
    )


def _done_ids(found: Iterable[dict[str, Any]]) -> list[str]:
    return [a["id"] for r in found for a in r["actions"] if a["outcome"] == "done"]
