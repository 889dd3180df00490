"""The spike follower end to end: a real worker follows a private dockerd's event stream, sees a
burst of starts at once, makes the removal sweep in flight yield to it, and clears the
backlog in the gap after it, without waiting for a scheduled tick.

It prints what it measured (detection and gap latency on the daemon's clock); the bounds it
asserts are generous, since the machine is shared.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import docker
import redis
from celery import Celery
from support.celery import service_env, task_results
from support.containers import create_only, run_running

from janitor import keys
from janitor.children import wait_for
from janitor.dockerhost import parse_instant
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine

MANAGED = {"janitor.managed": "true"}
BURST_LABELS = {"janitor.test": "burst"}
BACKLOG = 150  # created, never started: removed one at a time, several seconds of acting
BURST = 40
BURST_PACE = 5.0  # starts per second the burst aims at: 300 a minute against a rate of 60
# Generous: the goals are 2 s and 5 s; a loaded machine delays starts and their events.
DETECTED_WITHIN = timedelta(seconds=5)
GAP_SEEN_WITHIN = timedelta(seconds=8)
SLACK = timedelta(seconds=3)


def at(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def burst(url: str, count: int, per_second: float) -> list[str]:
    """`count` short-lived unmanaged containers started at a steady pace from four threads."""
    started: list[str] = []
    lock = threading.Lock()
    began = time.monotonic()
    due = iter(range(count))

    def run() -> None:
        client = docker.DockerClient(base_url=url, timeout=30)
        try:
            while True:
                with lock:
                    n = next(due, None)
                if n is None:
                    return
                time.sleep(max(0.0, began + n / per_second - time.monotonic()))
                container_id = run_running(client, labels=BURST_LABELS, command=("true",))
                with lock:
                    started.append(container_id)
        finally:
            client.close()

    threads = [threading.Thread(target=run, name=f"burst-{n}") for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started


def started_at(host: Engine, container_ids: list[str]) -> list[datetime]:
    client = host.client()
    instants = [
        parse_instant(client.api.inspect_container(c)["State"]["StartedAt"]) for c in container_ids
    ]
    return sorted(i for i in instants if i is not None)


def test_a_burst_is_seen_at_once_the_sweep_in_flight_yields_and_the_gap_clears_the_backlog(
    beta: Engine, redis_url: str, procs: Processes
) -> None:
    env = service_env(
        {"beta": beta.url},
        redis_url,
        spike_rate="60",
        created_grace="1s",
        max_runtime="1h",
        # No beat, and the interval far off: only the follower can start the sweep in the gap.
        remove_interval="10m",
        kill_interval="1m",
        # The burst loads the daemon: the sweep's calls must outlast it, not fail the sweep.
        docker_timeout="10s",
        concurrency="1",
    )
    worker = procs.worker(env)
    worker.wait_ready()
    # Every wait fails early if the worker died, and shows the end of its log.
    wait = functools.partial(wait_for, alive=procs.check_alive, details=worker.log_tail)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    wait(
        lambda: client.get(keys.spike("beta")),
        timeout=20,
        what="the follower's first published state",
    )
    backlog = [
        create_only(beta.client(), labels=MANAGED, command=("true",)) for _ in range(BACKLOG)
    ]
    time.sleep(1.5)  # past JANITOR_CREATED_GRACE
    sender = Celery("client", broker=redis_url, backend=redis_url)
    try:
        sender.send_task("janitor.remove_stopped", args=["beta"], queue="janitor.beta")
    finally:
        sender.close()
    wait(
        lambda: [e for e in worker.events("action_done") if e["container_id"] in backlog],
        timeout=30,
        what="the removal sweep acting on the backlog",
    )
    spiked = burst(beta.url, BURST, BURST_PACE)
    starts = started_at(beta, spiked)

    yielded = wait(
        lambda: worker.events("sweep_yielded"),
        timeout=20,
        what="the sweep in flight yielding to the burst",
    )
    ended = wait(
        lambda: worker.events("spike_ended"),
        timeout=30,
        what="the follower seeing the burst end",
    )

    def backlog_gone() -> list[dict[str, Any]]:
        done = [e for e in worker.events("action_done") if e["container_id"] in backlog]
        return done if len(done) == len(backlog) else []

    removed = wait(
        backlog_gone,
        timeout=60,
        what="the backlog removed in the gap",
    )
    began = worker.events("spike_began")[0]
    seen_at = datetime.fromisoformat(began["seen_at"])
    gap_seen_at = datetime.fromisoformat(ended[0]["seen_at"])
    detection, gap = seen_at - starts[0], gap_seen_at - starts[-1]
    print(
        f"\nburst: {len(starts)} starts over {(starts[-1] - starts[0]).total_seconds():.1f} s;"
        f" detection latency {detection.total_seconds():.2f} s (first start -> spike on),"
        f" gap latency {gap.total_seconds():.2f} s (last start -> spike off), daemon clock"
    )
    assert timedelta(0) <= detection <= DETECTED_WITHIN, (detection, began)
    assert timedelta(0) < gap <= GAP_SEEN_WITHIN, (gap, ended[0])

    # The sweep in flight stopped starting removals once the spike was on, and said so.
    yielded_at = at(yielded[0])
    assert yielded[0]["yielded"] > 0
    first_sweep = [e for e in removed if at(e) <= yielded_at]
    assert 0 < len(first_sweep) < BACKLOG
    results = [r["result"] for r in task_results(redis_url) if isinstance(r["result"], dict)]
    yielded_reports = [
        r
        for r in results
        if any(a.get("detail") == "yielded_to_spike" for a in r.get("actions", []))
    ]
    assert len(yielded_reports) == 1
    assert yielded_reports[0]["status"] == "ok"
    assert yielded_reports[0]["counts"]["refused"] == yielded[0]["yielded"]

    # The rest went in the gap: the follower sent the sweep as soon as it saw the end.
    emitted_gap = worker.events("gap_sweep_started")
    assert len(emitted_gap) == 1
    rest = [e for e in removed if at(e) > yielded_at]
    assert min(at(e) for e in rest) >= at(ended[0])
    assert min(at(e) for e in rest) <= at(ended[0]) + SLACK, (rest[0], ended[0])
    assert not [c for c in backlog if beta.client().api.containers(all=True, filters={"id": c})]
