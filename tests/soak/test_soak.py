"""Soak: the service (a real `celery worker` and `celery beat`) on two hosts under a steady churn
of containers for JANITOR_SOAK_MINUTES (default 20), with intervals of seconds.

What must hold: every container that becomes eligible is handled (killed, or removed) within
two intervals of its task; no managed container outlives its budget by more than two intervals
(no leak); the worker's memory stays flat; nothing the janitor must not touch is touched, and
nothing is acted on before its time. A JSON summary goes to tests/soak/last-result.json.

Run it with `make soak` (the default test run deselects `slow`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
from support.bystanders import disturbed, plant_bystanders
from support.celery import reports, service_env, task_results
from support.churn import (
    JUDGED_KINDS,
    Churn,
    EventLog,
    Lifecycle,
    MemorySampler,
    Spawned,
    slope_per_hour,
)

from janitor.dockerhost import parse_instant
from janitor.vocabulary import parse_duration
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine

SOAK_MINUTES = float(os.environ.get("JANITOR_SOAK_MINUTES", "20"))
RESULT_PATH = Path(__file__).with_name("last-result.json")
SETTINGS = {
    "kill_interval": "6s",
    "remove_interval": "12s",
    "docker_timeout": "3s",
    "stop_timeout": "1s",
    "max_runtime": "20s",
    "stopped_grace": "10s",
    "created_grace": "15s",
    "log_level": "INFO",
    "log_format": "json",
    "pressure_high": "0",
}
KILL_INTERVAL = parse_duration(SETTINGS["kill_interval"]).total_seconds()
REMOVE_INTERVAL = parse_duration(SETTINGS["remove_interval"]).total_seconds()
STOP_TIMEOUT = parse_duration(SETTINGS["stop_timeout"]).total_seconds()
RATE_PER_HOST = 1.5
SAMPLE_PERIOD = 10.0
# Memory settles once every kind of sweep has run a few times in every pool process.
WARMUP = min(120.0, SOAK_MINUTES * 60 * 0.2)
# Flat: the worker (main process and pool) grows by less than this per hour after warm-up.
MAX_SLOPE_MIB_PER_HOUR = 20.0
# Past the end of the churn: the longest budget (30s) + grace (10s) + two remove intervals.
DRAIN = 30 + 10 + 2 * REMOVE_INTERVAL + 2 * KILL_INTERVAL + 10


def budget(labels: Mapping[str, str], key: str, default: str) -> float:
    return parse_duration(labels.get(key, SETTINGS[default])).total_seconds()


def deadlines(spawned: Spawned, life: Lifecycle) -> list[dict[str, Any]]:
    """When the janitor owed this container an action, and when it happened (None: not yet).

    A ghost is owed a kill at start + max runtime; the die that follows must come within two
    kill intervals (plus the stop timeout, SIGTERM being ignored by its PID 1). An exited
    container is owed a removal at die + grace, a created one at creation + created grace.
    """
    labels = spawned.labels
    owed = []
    if spawned.kind in ("ghost", "ghost-always") and life.starts:
        eligible = life.starts[0] + budget(labels, "janitor.max-runtime", "max_runtime")
        died = next((d for d in life.dies if d >= eligible), None)
        owed.append(
            {"task": "kill-ghosts", "eligible": eligible, "handled": died, "slack": STOP_TIMEOUT}
        )
    if spawned.kind == "created" and life.created is not None:
        eligible = life.created + budget(labels, "", "created_grace")
        owed.append(
            {"task": "remove-stopped", "eligible": eligible, "handled": life.destroyed, "slack": 0}
        )
    elif spawned.kind in JUDGED_KINDS and life.dies:
        eligible = life.dies[-1] + budget(labels, "janitor.stopped-grace", "stopped_grace")
        owed.append(
            {"task": "remove-stopped", "eligible": eligible, "handled": life.destroyed, "slack": 0}
        )
    return owed


def interval_of(task: str) -> float:
    return KILL_INTERVAL if task == "kill-ghosts" else REMOVE_INTERVAL


def judge(
    spawned: Iterable[Spawned], lives: Mapping[tuple[str, str], Lifecycle], until: float
) -> dict[str, Any]:
    """Lateness of every action owed before `until` - two intervals, per task."""
    lateness: dict[str, list[float]] = {"kill-ghosts": [], "remove-stopped": []}
    late = []
    for item in spawned:
        life = lives.get((item.host, item.id))
        if life is None:
            continue
        for owed in deadlines(item, life):
            limit = 2 * interval_of(owed["task"]) + owed["slack"]
            if owed["eligible"] + limit > until:
                continue  # not yet due when observation ended
            handled = owed["handled"]
            delay = float("inf") if handled is None else handled - owed["eligible"] - owed["slack"]
            lateness[owed["task"]].append(delay)
            if delay > 2 * interval_of(owed["task"]):
                late.append({"id": item.id, "host": item.host, "kind": item.kind, **owed})
    summary: dict[str, Any] = {"late": late[:20], "late_count": len(late)}
    for task, delays in lateness.items():
        finite = sorted(d for d in delays if d != float("inf"))
        within = sum(1 for d in delays if d <= 2 * interval_of(task))
        summary[task] = {
            "interval_s": interval_of(task),
            "judged": len(delays),
            "within_two_intervals": within,
            "fraction": round(within / len(delays), 5) if delays else None,
            "never_handled": sum(1 for d in delays if d == float("inf")),
            "delay_s_p50": round(statistics.median(finite), 2) if finite else None,
            "delay_s_p95": round(finite[int(0.95 * (len(finite) - 1))], 2) if finite else None,
            "delay_s_max": round(finite[-1], 2) if finite else None,
        }
    return summary


def leaks(host: Engine, exempt: Iterable[str]) -> list[dict[str, Any]]:
    """Managed containers that have outlived their budget by more than two intervals."""
    api = host.api()
    now = parse_instant(api.info()["SystemTime"])
    assert now is not None
    found = []
    skip = set(exempt)
    for summary in api.containers(all=True, filters={"label": "janitor.managed=true"}):
        if summary["Id"] in skip:
            continue
        try:
            raw = api.inspect_container(summary["Id"])
        except docker.errors.NotFound:
            continue
        labels = raw["Config"]["Labels"] or {}
        state = raw["State"]
        if state["Status"] == "running":
            since = parse_instant(state["StartedAt"])
            allowed = budget(labels, "janitor.max-runtime", "max_runtime") + STOP_TIMEOUT
            allowed += 2 * KILL_INTERVAL
        elif state["Status"] == "created":
            since = parse_instant(raw["Created"])
            allowed = budget(labels, "", "created_grace") + 2 * REMOVE_INTERVAL
        elif state["Status"] in ("exited", "dead"):
            since = parse_instant(state["FinishedAt"])
            allowed = budget(labels, "janitor.stopped-grace", "stopped_grace") + 2 * REMOVE_INTERVAL
        else:
            continue  # removing, restarting: in flight
        if since is not None and now - since > timedelta(seconds=allowed):
            age = (now - since).total_seconds()
            found.append({"host": host.name, "id": summary["Id"], "state": state["Status"],
                          "age_s": round(age, 1), "allowed_s": allowed})  # fmt: skip
    return found


def memory_summary(sampler: MemorySampler, began: float) -> dict[str, Any]:
    settled = [s for s in sampler.samples if s.at - began >= WARMUP]
    return {
        "samples": len(sampler.samples),
        "warmup_s": WARMUP,
        "session_mib_first": round(settled[0].session_mib, 1) if settled else None,
        "session_mib_last": round(settled[-1].session_mib, 1) if settled else None,
        "session_mib_max": round(max(s.session_mib for s in settled), 1) if settled else None,
        "processes": sorted({s.processes for s in sampler.samples}),
        "slope_mib_per_hour": round(slope_per_hour([(s.at, s.session_mib) for s in settled]), 2),
        "leader_slope_mib_per_hour": round(
            slope_per_hour([(s.at, s.leader_mib) for s in settled]), 2
        ),
    }


def janitor_summary(redis_url: str, spawned: list[Spawned]) -> dict[str, Any]:
    results = task_results(redis_url)
    found = reports(results)
    sweeps = [r for r in found if r.get("status") != "deferred"]
    kinds = {s.id: s.kind for s in spawned}
    outcomes: Counter[str] = Counter()
    touched_kinds: Counter[str] = Counter()
    for report in sweeps:
        for action in report["actions"]:
            outcomes[f"{action['action']} {action['outcome']}"] += 1
            if action["outcome"] == "done":
                touched_kinds[kinds.get(action["id"], "not spawned")] += 1
    failed_errors = {r.get("error", "") for r in sweeps if r["status"] == "failed"}
    return {
        "task_results": len(results),
        "results_by_status": dict(Counter(r["status"] for r in results)),
        "expired_ticks": sum(1 for r in results if _expired(r)),
        "sweeps": len(sweeps),
        "sweeps_by_status": dict(Counter(r["status"] for r in sweeps)),
        "failed_sweep_errors": sorted(failed_errors)[:5],
        "actions": dict(outcomes),
        "done_by_kind": dict(touched_kinds),
    }


def _expired(result: Mapping[str, Any]) -> bool:
    # A tick that waited in the queue past its `expires`: discarded, no failure.
    return result["status"] == "REVOKED" and result["result"]["exc_message"] == ["expired"]


def premature(spawned: list[Spawned], lives: Mapping[tuple[str, str], Lifecycle]) -> list[str]:
    """Containers that died or vanished before the janitor owed them anything."""
    found = []
    for item in spawned:
        life = lives.get((item.host, item.id))
        if life is None or item.kind not in ("ghost", "ghost-always"):
            continue
        for owed in deadlines(item, life):
            if owed["task"] == "kill-ghosts" and life.dies and life.dies[0] < owed["eligible"]:
                found.append(f"{item.host} {item.id[:12]} ({item.kind}) died before its budget")
    return found


@dataclass
class Observation:
    churns: list[Churn]
    events: dict[str, EventLog]
    sampler: MemorySampler
    began: float
    leaks_at_end: list[dict[str, Any]]
    leaks_after_drain: list[dict[str, Any]]
    left: dict[str, list[str]]
    until: float


def observe(procs: Processes, hosts: Sequence[Engine], env: Mapping[str, str],
            protected: set[str]) -> Observation:  # fmt: skip
    """Run the service and the churn for SOAK_MINUTES, then drain; watch all along."""
    events = {h.name: EventLog(h.url) for h in hosts}
    for log in events.values():
        log.start()
    worker = procs.worker(env)
    procs.beat(env)
    worker.wait_ready()
    began = time.monotonic()
    sampler = MemorySampler(worker.pid, SAMPLE_PERIOD)
    sampler.start()
    churns = [Churn(h.name, h.url, RATE_PER_HOST, seed) for seed, h in enumerate(hosts)]
    try:
        for churn in churns:
            churn.start()
        deadline = began + SOAK_MINUTES * 60
        while time.monotonic() < deadline:
            procs.check_alive()
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    finally:
        for churn in churns:
            churn.stop()
    leaks_at_end = [leak for h in hosts for leak in leaks(h, protected)]
    # Drain: with no new work, everything spawned must be handled and gone.
    drain_deadline = time.monotonic() + DRAIN
    while time.monotonic() < drain_deadline:
        procs.check_alive()
        time.sleep(5)
    leaks_after_drain = [leak for h in hosts for leak in leaks(h, protected)]
    left = {
        h.name: [
            c["Id"][:12]
            for c in h.api().containers(all=True, filters={"label": "janitor.managed=true"})
            if c["Id"] not in protected
        ]
        for h in hosts
    }
    until = time.time()
    sampler.stop()
    for log in events.values():
        log.close()
    procs.check_alive()
    return Observation(churns, events, sampler, began, leaks_at_end, leaks_after_drain, left, until)


@pytest.mark.slow
@pytest.mark.timeout(int(SOAK_MINUTES * 60 + DRAIN + 900))
def test_soak_two_hosts_under_churn(
    alpha: Engine,
    beta: Engine,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosts = (alpha, beta)
    env = service_env({h.name: h.url for h in hosts}, redis_url, **SETTINGS)
    bystanders = {h.name: plant_bystanders(h.client()) for h in hosts}
    protected = {c for per_host in bystanders.values() for c in per_host}
    load_before = os.getloadavg()
    with Processes(tmp_path) as procs:
        seen = observe(procs, hosts, env, protected)

    churns, events = seen.churns, seen.events
    spawned = [s for churn in churns for s in churn.spawned]
    lives = {(name, cid): life for name, log in events.items() for cid, life in log.lives.items()}
    disturbed_bystanders = {h.name: disturbed(h.client(), bystanders[h.name]) for h in hosts}
    summary = {
        "minutes": SOAK_MINUTES,
        "hosts": [h.name for h in hosts],
        "settings": SETTINGS,
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "spawned": {
            "total": len(spawned),
            "per_second_per_host": [round(c.achieved_rate, 2) for c in churns],
            "by_kind": dict(Counter(s.kind for s in spawned)),
            "errors": {k: v for c in churns for k, v in c.errors.items()},
        },
        "events": {name: log.count for name, log in events.items()},
        "event_stream_errors": {n: log.error for n, log in events.items() if log.error},
        "janitor": janitor_summary(redis_url, spawned),
        "handled": judge(spawned, lives, seen.until),
        "leaks_at_end_of_churn": seen.leaks_at_end,
        "leaks_after_drain": seen.leaks_after_drain,
        "managed_left_after_drain": seen.left,
        "premature": premature(spawned, lives)[:20],
        "bystanders_disturbed": {n: d for n, d in disturbed_bystanders.items() if d},
        "worker_memory": memory_summary(seen.sampler, seen.began),
    }
    RESULT_PATH.write_text(json.dumps(summary, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nsoak summary ({RESULT_PATH}):\n{json.dumps(summary, indent=2)}")

    assert not summary["event_stream_errors"]
    assert summary["janitor"]["results_by_status"].get("FAILURE", 0) == 0
    assert not summary["bystanders_disturbed"]
    assert not summary["premature"]
    assert summary["janitor"]["done_by_kind"].get("tidy", 0) == 0
    assert summary["janitor"]["done_by_kind"].get("auto-remove", 0) == 0
    for task in ("kill-ghosts", "remove-stopped"):
        handled = summary["handled"][task]
        assert handled["judged"] > 0, handled
        assert handled["within_two_intervals"] == handled["judged"], summary["handled"]
    assert not seen.leaks_at_end
    assert not seen.leaks_after_drain
    assert summary["worker_memory"]["slope_mib_per_hour"] < MAX_SLOPE_MIB_PER_HOUR
