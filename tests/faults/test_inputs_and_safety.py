"""Faults from outside the code: skewed clocks, racing users, a careless selector, bad input,
secrets in URLs, and the janitor's own containers. Each test plants a protected and an
unmanaged container (support.bystanders) and checks that they come through untouched.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bystanders import MANAGED, disturbed, plant_bystanders
from support.celery import service_env
from support.cli import JANITOR, Run, janitor_env, run_janitor, sweep_json
from support.containers import container_ids, create_only, run_exited, run_running, state_or_gone

from janitor import cli
from janitor.children import free_port, wait_for
from janitor.dockerhost import DockerHost, own_container_ids
from janitor.errors import ConfigError
from janitor.kinds import sweep_containers
from janitor.locks import NoLease
from janitor.model import Container, Task
from janitor.settings import Settings, load_settings
from janitor.sweep import SweepOptions
from sandbox.celery_processes import Processes, celery_command
from sandbox.daemons import Engine
from sandbox.redisserver import PrivateRedis

AGE = 1.5
OUTCOMES = {"done", "gone", "refused", "failed"}


def containers_by_state(client: docker.DockerClient) -> dict[str, str]:
    return {c: state_or_gone(client, c) for c in container_ids(client)}


def assert_counts_add_up(report: Mapping[str, Any]) -> None:
    counted = Counter(action["outcome"] for action in report["actions"])
    assert dict(counted) == report["counts"], report
    assert sum(report["counts"].values()) == len(report["actions"])


# --- 6. Clock skew: ages are measured on the daemon's clock -----------------------------------

FAKETIME = shutil.which("faketime")
SKEW = re.compile(r"clock ([+-]\d+\.\d)s from this machine")


def run_faked(offset: str, args: list[str], env: Mapping[str, str]) -> Run:
    """The janitor command with this process's clock moved by `offset` (libfaketime)."""
    if FAKETIME is None:
        raise RuntimeError("faketime not found on PATH: apt-get install faketime")
    done = subprocess.run(
        [FAKETIME, "-f", offset, JANITOR, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


@pytest.mark.parametrize(("offset", "hours"), [("+5h", 5), ("-5h", -5)])
def test_a_worker_clock_hours_off_changes_no_age(alpha: Engine, offset: str, hours: int) -> None:
    """Five hours ahead, the young would look like ghosts; five hours behind, the old would
    look unborn. Neither may change a decision: ages come from the daemon's clock."""
    client = alpha.client()
    young = {
        run_running(client, labels=MANAGED): "running",
        run_exited(client, labels=MANAGED): "exited",
        create_only(client, labels=MANAGED): "created",
    }
    ghost = run_running(
        client, labels={**MANAGED, "janitor.max-runtime": "1s", "janitor.stopped-grace": "1h"}
    )
    exited = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "1s"})
    bystanders = plant_bystanders(client)
    time.sleep(AGE)
    env = janitor_env(
        {"alpha": alpha.url}, max_runtime="1h", stopped_grace="1h", created_grace="1h"
    )

    # The fake clock reaches the janitor: `check` sees the daemon hours away from "this machine".
    check = run_faked(offset, ["check"], env)
    match = SKEW.search(check.stdout)
    assert match, check.stdout + check.stderr
    assert abs(float(match.group(1)) + hours * 3600) < 120, check.stdout

    run = run_faked(offset, ["sweep", "--json"], env)
    assert run.code == 0, run.stderr
    real_now = datetime.now(UTC)
    for report in run.reports:
        assert_counts_add_up(report)
        daemon_time = datetime.fromisoformat(report["daemon_time"])
        assert abs(daemon_time - real_now) < timedelta(minutes=2), report["daemon_time"]
        assert 0 <= report["duration_s"] < 120
    killed = run.report("alpha", "kill-ghosts")["actions"]
    removed = run.report("alpha", "remove-stopped")["actions"]
    assert [(a["id"], a["reason"], a["outcome"]) for a in killed] == [
        (ghost, "over_runtime_budget", "done")
    ]
    assert [(a["id"], a["reason"], a["outcome"]) for a in removed] == [
        (exited, "exited_past_grace", "done")
    ]
    assert {c: state_or_gone(client, c) for c in young} == young
    assert state_or_gone(client, ghost) == "exited"
    assert state_or_gone(client, exited) == "gone"
    assert not disturbed(client, bystanders)


# --- 7. Races at scale: someone else acts on the candidates during the sweep -------------------

# Exits at once the first time; any later start (a user's restart) keeps running, so a container
# someone restarted is still running when the janitor reaches it.
ONCE_THEN_FOREVER = ("sh", "-c", "[ -e /ran ] && exec sleep 100000; touch /ran")
RACE_GHOSTS, RACE_EXITED, RACE_CREATED = 50, 50, 400
MEDDLERS = 4
MEDDLING = {"restart": 30, "start": 25, "pause": 20, "remove": 25}
RUNS_AGAIN = {"restart", "start", "pause"}


@dataclass(frozen=True)
class Call:
    who: str
    op: str
    container_id: str
    began: float
    ended: float
    ok: bool


class RecordingHost(DockerHost):
    """The janitor's real adapter, noting when each call on a container began and ended."""

    def __init__(self, config: Any, journal: list[Call]) -> None:
        super().__init__(config, timeout=timedelta(seconds=30), max_pool_size=12)
        self.journal = journal

    def _timed(self, op: str, container_id: str, call: Callable[[], Any]) -> Any:
        began, ok = time.monotonic(), False
        try:
            result = call()
            ok = True
            return result
        finally:
            self.journal.append(Call("janitor", op, container_id, began, time.monotonic(), ok))

    def inspect(self, container_id: str) -> Container:
        parent = super().inspect
        result: Container = self._timed("inspect", container_id, lambda: parent(container_id))
        return result

    def kill(self, container: Container, stop_timeout: timedelta) -> None:
        parent = super().kill
        self._timed("kill", container.id, lambda: parent(container, stop_timeout))

    def remove(self, container_id: str, *, volumes: bool) -> None:
        parent = super().remove
        self._timed("remove", container_id, lambda: parent(container_id, volumes=volumes))


def _meddle(url: str, ids: list[str], journal: list[Call], stop: threading.Event, seed: int) -> int:
    """Restart, start, pause and force-remove random candidates as fast as the daemon lets."""
    rng = random.Random(seed)
    api = docker.APIClient(base_url=url, timeout=60)

    def start(container_id: str) -> bool:
        # The SDK takes 304 (already running) for success; only 204 started anything.
        response = api._post(api._url("/containers/{0}/start", container_id))
        api._raise_for_status(response)
        return response.status_code == 204

    ops: dict[str, Callable[[str], object]] = {
        "restart": lambda c: api.restart(c, timeout=0),
        "start": start,
        "pause": api.pause,
        "remove": lambda c: api.remove_container(c, force=True),
    }
    names, weights = list(MEDDLING), list(MEDDLING.values())
    done = 0
    try:
        while not stop.is_set():
            container_id = rng.choice(ids)
            op = rng.choices(names, weights)[0]
            began = time.monotonic()
            ok = _succeeds(lambda: ops[op](container_id))  # noqa: B023  (called at once)
            journal.append(Call("meddler", op, container_id, began, time.monotonic(), ok))
            done += 1
    finally:
        api.close()
    return done


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        return call() is not False
    except docker.errors.APIError:
        return False  # 404, 409: the container was not in a state for it


@contextmanager
def meddling(url: str, ids: list[str], journal: list[Call]) -> Iterator[None]:
    stop = threading.Event()
    with ThreadPoolExecutor(MEDDLERS, thread_name_prefix="meddler") as pool:
        futures = [pool.submit(_meddle, url, ids, journal, stop, seed) for seed in range(MEDDLERS)]
        try:
            yield
        finally:
            stop.set()
            for future in futures:
                future.result()


def _exited_once(client: docker.DockerClient) -> str:
    container_id = run_running(client, labels=MANAGED, command=ONCE_THEN_FOREVER)
    client.api.wait(container_id, timeout=60)
    return container_id


def _plant_race(client: docker.DockerClient) -> list[str]:
    with ThreadPoolExecutor(4) as pool:
        ghosts = pool.map(lambda _: run_running(client, labels=MANAGED), range(RACE_GHOSTS))
        exited = pool.map(lambda _: _exited_once(client), range(RACE_EXITED))
        created = pool.map(lambda _: create_only(client, labels=MANAGED), range(RACE_CREATED))
        return [*ghosts, *exited, *created]


def _race_violations(
    report: Mapping[str, Any], journal: list[Call], window: tuple[float, float]
) -> list[str]:
    """Outcomes that a racing user's earlier action should have prevented.

    The re-check (the janitor's last inspect before acting) is the decision acted on: anything
    someone did that finished before it began must be seen. What happens between the re-check
    and the call is a window Docker gives no way to close (no conditional stop).
    """
    began, ended = window
    by_container: dict[str, list[Call]] = {}
    for call in journal:
        if began <= call.began <= ended or call.who == "meddler":
            by_container.setdefault(call.container_id, []).append(call)
    violations = []
    for action in report["actions"]:
        calls = by_container.get(action["id"], [])
        mine = [c for c in calls if c.who == "janitor" and began <= c.began <= ended]
        inspects = [c for c in mine if c.op == "inspect"]
        acts = [c for c in mine if c.op == action["action"]]
        if len(inspects) < 2:
            violations.append(f"{action}: no re-check before acting ({mine})")
            continue
        recheck = inspects[1]
        # A container the janitor itself killed earlier is stopped again whatever ran before.
        killed_at = max(
            (c.ended for c in calls if c.who == "janitor" and c.op == "kill" and c.ok
             and c.ended < recheck.began),
            default=float("-inf"),
        )  # fmt: skip
        theirs = [c for c in calls if c.who == "meddler" and c.ok and c.ended > killed_at]
        seen_before = [c for c in theirs if c.ended < recheck.began]
        if action["outcome"] == "done":
            if not acts or not acts[0].ok:
                violations.append(f"{action}: done without a successful call ({mine})")
            ran = [c.op for c in seen_before if c.op in RUNS_AGAIN]
            if ran:
                violations.append(f"{action}: done though {ran} finished before the re-check")
        if any(c.op == "remove" for c in seen_before) and action["outcome"] != "gone":
            violations.append(f"{action}: removed by someone else before the re-check")
        if action["action"] == "remove" and action["outcome"] == "done" and acts:
            started = [
                c.op for c in theirs if c.op in {"restart", "start"} and c.ended < acts[0].began
            ]
            if started:
                violations.append(f"{action}: removed while running (after {started})")
    return violations


def test_500_candidates_raced_by_a_meddling_user(alpha: Engine) -> None:
    """Four threads restart, start, pause and force-remove random candidates while the
    janitor sweeps 500 of them: every outcome is one of the contract's, counts add up, and no
    outcome contradicts what the user finished before the janitor's re-check."""
    client = alpha.client()
    started = time.monotonic()
    candidates = _plant_race(client)
    bystanders = plant_bystanders(client)
    print(f"planted {len(candidates)} candidates in {time.monotonic() - started:.1f} s")
    time.sleep(AGE)
    config = Settings(
        hosts=f"alpha={alpha.url}",  # type: ignore[arg-type]
        max_runtime="1s",  # type: ignore[arg-type]
        stopped_grace="1s",  # type: ignore[arg-type]
        created_grace="1s",  # type: ignore[arg-type]
        stop_timeout="0s",  # type: ignore[arg-type]
    )
    journal: list[Call] = []
    reports: list[tuple[dict[str, Any], tuple[float, float]]] = []
    with (
        RecordingHost(config.host("alpha"), journal) as host,
        meddling(alpha.url, candidates, journal),
    ):
        for task in (Task.KILL_GHOSTS, Task.REMOVE_STOPPED):
            began = time.monotonic()
            options = SweepOptions.from_settings(config, task)
            report = sweep_containers(host, config.rules(), options, NoLease(), host.info().now)
            reports.append((report.to_dict(), (began, time.monotonic())))
            print(f"{task.value} swept in {time.monotonic() - began:.1f} s")

    meddled = Counter((c.op, c.ok) for c in journal if c.who == "meddler")
    scanned = sum(report["scanned"] for report, _ in reports)
    print(f"meddler calls (op, ok): {dict(meddled)}")
    violations = []
    for report, window in reports:
        print(f"{report['task']}: scanned {report['scanned']}, counts {report['counts']}")
        assert report["status"] == "ok", report.get("error")
        assert_counts_add_up(report)
        assert {a["outcome"] for a in report["actions"]} <= OUTCOMES
        violations += _race_violations(report, journal, window)
    assert not violations, "\n".join(violations[:20])
    assert scanned >= 500
    # The races happened: some candidates vanished and some changed under the sweep.
    outcomes = Counter(a["outcome"] for report, _ in reports for a in report["actions"])
    assert outcomes["gone"] >= 1, outcomes
    assert outcomes["refused"] >= 1, outcomes
    assert outcomes["done"] >= 100, outcomes
    assert not disturbed(client, bystanders)


# --- 8. Blast radius: a sweep over JANITOR_MAX_ACTIONS changes nothing -------------------------

TEAM = {"team": "ci"}


def _plant_blast(client: docker.DockerClient, eligible_created: int, eligible_exited: int) -> None:
    """Stopped containers with mixed labels: a third managed, a third of a team, a third bare."""
    label_sets = [MANAGED, TEAM, {}]
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda i: create_only(client, labels=label_sets[i % 3]), range(eligible_created)
            )
        )
        list(
            pool.map(lambda i: run_exited(client, labels=label_sets[i % 3]), range(eligible_exited))
        )


def test_a_selector_that_takes_90_percent_of_a_host_aborts_with_zero_changes(
    alpha: Engine, beta: Engine
) -> None:
    a_client, b_client = alpha.client(), beta.client()
    # alpha: 100 containers; under `*` the 88 planted stopped ones and the two unmanaged
    # stopped bystanders are past their grace: 90 eligible.
    a_bystanders = plant_bystanders(a_client)
    _plant_blast(a_client, eligible_created=74, eligible_exited=14)
    young = [run_running(a_client, labels=label) for label in (MANAGED, TEAM, {}) * 2]
    assert len(container_ids(a_client)) == 100
    # beta: 48 + 2 eligible under `*`, under the cap of 80 when judged on its own.
    b_bystanders = plant_bystanders(b_client)
    _plant_blast(b_client, eligible_created=38, eligible_exited=10)
    b_labels = {c: b_client.api.inspect_container(c)["Config"]["Labels"] for c in b_bystanders}
    time.sleep(AGE)
    a_before = containers_by_state(a_client)

    env = janitor_env(
        {"alpha": alpha.url, "beta": beta.url},
        selector="*",
        max_actions="80",
        stopped_grace="1s",
        created_grace="1s",
        max_runtime="1h",
    )
    run = sweep_json(env)
    assert run.code == 1, run.stderr
    aborted = run.report("alpha", "remove-stopped")
    assert aborted["status"] == "aborted"
    assert aborted["counts"] == {"refused": 90}
    assert_counts_add_up(aborted)
    assert containers_by_state(a_client) == a_before, "an aborted sweep changed alpha"
    loud = [e for e in run.log_events() if e["event"] == "sweep_aborted"]
    assert len(loud) == 1, loud
    assert loud[0]["level"] == "error"
    assert (loud[0]["host"], loud[0]["eligible"], loud[0]["max_actions"]) == ("alpha", 90, 80)
    # Nothing was over the cap on alpha's ghost sweep, nor on beta: the cap is per sweep.
    assert run.report("alpha", "kill-ghosts")["status"] == "ok"
    assert run.report("beta", "kill-ghosts")["status"] == "ok"
    on_beta = run.report("beta", "remove-stopped")
    assert on_beta["status"] == "ok"
    assert on_beta["counts"] == {"done": 50}
    # Under `*` an unlabelled container is managed too: on beta only protection holds (and
    # the young running ones are no ghosts), so the unmanaged stopped bystanders went.
    assert disturbed(b_client, b_bystanders) == {
        c: "gone"
        for c, planted_as in b_bystanders.items()
        if planted_as != "running" and "janitor.protect" not in b_labels[c]
    }

    # Back on the default selector, alpha's managed third goes and the rest stays.
    run = sweep_json({**env, "JANITOR_SELECTOR": "janitor.managed=true"})
    assert run.code == 0, run.stderr
    assert run.report("alpha", "remove-stopped")["counts"] == {"done": 30}
    assert all(state_or_gone(a_client, c) == "running" for c in young)
    assert not disturbed(a_client, a_bystanders)


# --- 9. Bad input: one line, exit 2, nothing changed --------------------------------------------


@dataclass(frozen=True)
class BadConfig:
    env: dict[str, str]
    names: str  # the variable the one line must name
    # Also run as real processes (a second each, more on a loaded machine): one case of each
    # kind of check, through the console script and through Celery's entry points.
    real: bool = False

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.env.items())


def _bad(name: str, value: str, *, real: bool = False, **more: str) -> BadConfig:
    env = {f"JANITOR_{name}": value, **{f"JANITOR_{k}": v for k, v in more.items()}}
    return BadConfig(env, name, real)


READABLE_FILE = "/etc/hostname"
BAD_CONFIGS = [
    _bad("HOSTS", "alpha"),
    _bad("HOSTS", ""),
    _bad("HOSTS", "Alpha=unix:///tmp/docker.sock"),
    _bad("HOSTS", "a=unix:///tmp/a.sock,a=unix:///tmp/b.sock", real=True),
    _bad("HOSTS", "a=unix:///tmp/a.sock,,b=unix:///tmp/b.sock"),
    _bad("HOSTS", "a=unix://relative.sock"),
    _bad("HOSTS", "a=http://127.0.0.1:2375"),
    _bad("HOSTS", "a=tcp://127.0.0.1"),
    _bad("HOSTS", "a=tcp://127.0.0.1:99999"),
    _bad("HOSTS", "a=tcp://user@127.0.0.1:2376"),
    _bad("HOSTS", "a=tcp://127.0.0.1:2375"),
    _bad("HOSTS", "a=tcp://10.1.2.3:2375", ALLOW_INSECURE_TCP="true"),
    _bad("REDIS_URL", "http://127.0.0.1:6379/0", real=True),
    _bad("REDIS_URL", "redis://127.0.0.1:notaport/0"),
    _bad("REDIS_URL", "redis://127.0.0.1:6379/zero"),
    _bad("REDIS_URL", ""),
    _bad("SELECTOR", "a=b,c=d"),
    _bad("SELECTOR", "=x"),
    _bad("SELECTOR", "team="),
    _bad("MAX_RUNTIME", "forever", real=True),
    _bad("MAX_RUNTIME", "0s"),
    _bad("MAX_RUNTIME", "99999d"),
    _bad("STOPPED_GRACE", "-5m"),
    _bad("CREATED_GRACE", "1y"),
    _bad("KILL_INTERVAL", "0.5s"),
    _bad("KILL_INTERVAL", "5s", DOCKER_TIMEOUT="10s", real=True),
    _bad("REMOVE_INTERVAL", "abc"),
    _bad("STOP_TIMEOUT", "5 minutes"),
    _bad("STOP_TIMEOUT", "50s"),
    _bad("DOCKER_TIMEOUT", "0"),
    _bad("MAX_DEFER", "soon"),
    _bad("LEASE_GRACE", "P"),
    _bad("PRESSURE_GRACE_FLOOR", "PT"),
    _bad("REMOVE_VOLUMES", "maybe"),
    _bad("DRY_RUN", "perhaps"),
    _bad("ALLOW_INSECURE_TCP", "sure"),
    _bad("CONCURRENCY", "0"),
    _bad("CONCURRENCY", "65"),
    _bad("CONCURRENCY", "eight"),
    _bad("MAX_ACTIONS", "0"),
    _bad("MAX_ACTIONS", "-1"),
    _bad("METRICS_PORT", "70000"),
    _bad("METRICS_PORT", "-1"),
    _bad("KEEP_LAST", "-1"),
    _bad("MAX_STOPPED", "-2"),
    _bad("SPIKE_RATE", "-1"),
    _bad("PRESSURE_HIGH", "1.5"),
    _bad("PRESSURE_LOW", "0.9", PRESSURE_HIGH="0.8"),
    _bad("TLS_CA_CERT", "/nonexistent/ca.pem"),
    _bad("TLS_CA_CERT", ""),
    _bad("TLS_CLIENT_CERT", READABLE_FILE, TLS_CA_CERT=READABLE_FILE, real=True),
    # A client certificate without the CA to check the host against.
    BadConfig(
        {"JANITOR_TLS_CLIENT_CERT": READABLE_FILE, "JANITOR_TLS_CLIENT_KEY": READABLE_FILE},
        "TLS_CA_CERT",
    ),
    _bad("LOG_FORMAT", "xml"),
    _bad("LOG_LEVEL", "verbose"),
]


def _one_line(text: str) -> str | None:
    lines = text.strip().splitlines()
    return lines[0] if len(lines) == 1 else None


def _judge(what: str, case: BadConfig, run: Run, prefix: str | None) -> list[str]:
    """Exit 2 (non-zero for Celery), one line naming the variable, never a traceback."""
    output = run.stdout + run.stderr
    line = _one_line(output)
    shown = f"{what} {case.id}: exit {run.code}\n{output}"
    if run.code == 0 or (prefix is not None and run.code != 2) or line is None:
        return [shown]
    if f"JANITOR_{case.names}" not in line or "Traceback" in output:
        return [shown]
    if prefix is not None and not line.startswith(prefix):
        return [shown]
    return []


def _in_process(case: BadConfig, base: Mapping[str, str], capsys: Any) -> list[str]:
    problems = []
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("JANITOR_")]:
            patch.delenv(name)
        for name, value in {**base, **case.env}.items():
            patch.setenv(name, value)
        for command, prefix in (("sweep", "janitor: "), ("check", "FAIL  configuration: ")):
            code = cli.main([command, "--json"] if command == "sweep" else [command])
            out, err = capsys.readouterr()
            what = f"janitor {command} (in process)"
            problems += _judge(what, case, Run(code, out, err), prefix)
            if command == "sweep" and out:
                problems.append(f"sweep {case.id} wrote to stdout: {out}")
    return problems


def _in_subprocess(case: BadConfig, base: Mapping[str, str], command: list[str]) -> list[str]:
    prefix = None
    if command[0] == JANITOR:
        prefix = "janitor: " if command[1] == "sweep" else "FAIL  configuration: "
    done = subprocess.run(
        command,
        env={**base, **case.env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    what = " ".join(Path(part).name for part in command[:5])
    return _judge(what, case, Run(done.returncode, done.stdout, done.stderr), prefix)


def test_every_bad_variable_stops_every_entry_point_with_one_line(
    alpha: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    client = alpha.client()
    ghost = run_running(client, labels=MANAGED)
    exited = run_exited(client, labels=MANAGED)
    bystanders = plant_bystanders(client)
    time.sleep(AGE)
    before = containers_by_state(client)
    # Valid but for the variable under test, and eager: a bad value let through would act.
    base = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    problems = [p for case in BAD_CONFIGS for p in _in_process(case, base, capsys)]
    real = [case for case in BAD_CONFIGS if case.real]
    runs = [
        (case, command)
        for case in real
        for command in (
            [JANITOR, "sweep", "--json"],
            [JANITOR, "check"],
            celery_command("worker"),
        )
    ]
    runs += [(real[0], celery_command(role)) for role in ("beat", "flower")]
    with ThreadPoolExecutor(4) as pool:
        problems += [
            p for found in pool.map(lambda run: _in_subprocess(run[0], base, run[1]), runs)
            for p in found
        ]  # fmt: skip
    assert not problems, "\n\n".join(problems)
    assert containers_by_state(client) == before
    assert state_or_gone(client, ghost) == "running"
    assert state_or_gone(client, exited) == "exited"
    assert not disturbed(client, bystanders)


def test_an_unknown_host_on_the_command_line_changes_nothing(alpha: Engine) -> None:
    client = alpha.client()
    run_running(client, labels=MANAGED)
    run_exited(client, labels=MANAGED)
    plant_bystanders(client)
    time.sleep(AGE)
    before = containers_by_state(client)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    # Even next to a good host: the names are checked before any sweep starts.
    run = run_janitor(["sweep", "--host", "alpha", "--host", "nope"], env)
    assert run.code == 2
    line = _one_line(run.stderr)
    assert line is not None, run.stderr
    assert "'nope'" in line
    assert "alpha" in line
    assert run.stdout == ""
    assert containers_by_state(client) == before


BAD_LABELS = {
    "janitor.max-runtime": ["forever", "-1s", "", "1 h", "10x", "\u0661\u0662s", "PT", "99999d"],
    "janitor.stopped-grace": ["soon", "5m30", "1e3", "P1DT"],
}


def test_malformed_duration_labels_are_reported_and_never_acted_on(alpha: Engine) -> None:
    client = alpha.client()
    on_running = {
        run_running(client, labels={**MANAGED, key: value}): (key, value)
        for key, values in BAD_LABELS.items()
        for value in values
    }
    on_exited = {
        run_exited(client, labels={**MANAGED, "janitor.stopped-grace": value}): value
        for value in BAD_LABELS["janitor.stopped-grace"]
    }
    on_created = create_only(client, labels={**MANAGED, "janitor.max-runtime": "forever"})
    bystanders = plant_bystanders(client)
    time.sleep(AGE)
    before = containers_by_state(client)
    env = janitor_env(
        {"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s", created_grace="1s"
    )
    run = sweep_json(env)
    assert run.code == 0, run.stderr
    for report in run.reports:
        assert_counts_add_up(report)
        assert all(a["reason"] == "bad_label" for a in report["actions"]), report
        assert all(a["outcome"] == "refused" for a in report["actions"]), report
    killed = {a["id"] for a in run.report("alpha", "kill-ghosts")["actions"]}
    removed = {a["id"] for a in run.report("alpha", "remove-stopped")["actions"]}
    assert killed == set(on_running)
    assert removed == {*on_exited, on_created}
    assert containers_by_state(client) == before
    assert not disturbed(client, bystanders)


DURATION_VARS = [
    "JANITOR_MAX_RUNTIME",
    "JANITOR_STOPPED_GRACE",
    "JANITOR_CREATED_GRACE",
    "JANITOR_KILL_INTERVAL",
    "JANITOR_REMOVE_INTERVAL",
    "JANITOR_STOP_TIMEOUT",
    "JANITOR_DOCKER_TIMEOUT",
    "JANITOR_LEASE_GRACE",
    "JANITOR_MAX_DEFER",
]
# What an environment variable can hold: no NUL, no lone surrogates.
ENV_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=30,
)
NEAR_DURATIONS = st.one_of(
    ENV_TEXT,
    st.from_regex(r"\A *[-+]?[0-9]{0,4}(\.[0-9]{0,3})?[smhdwSMHDW]?([0-9]{1,3}[smhdw])? *\Z"),
    st.from_regex(r"\A[Pp]([0-9]{1,3}[WwDd])?([Tt]([0-9.]{1,4}[HhMmSs]){0,3})?\Z"),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
HOST_NAMES = st.one_of(st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,8}\Z"), ENV_TEXT)
HOST_URLS = st.one_of(
    st.builds(
        "{}{}".format,
        st.sampled_from(["unix://", "unix:///", "tcp://", "tcp://127.0.0.1:", "http://", ""]),
        ENV_TEXT,
    ),
    st.builds("tcp://{}:{}".format, ENV_TEXT, st.integers(-5, 70000)),
)
HOSTS_VALUES = st.one_of(
    ENV_TEXT,
    st.lists(st.builds("{}={}".format, HOST_NAMES, HOST_URLS), min_size=1, max_size=3).map(
        ",".join
    ),
)


def _load_with(env: Mapping[str, str]) -> Settings | ConfigError:
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("JANITOR_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            return load_settings()
        except ConfigError as exc:
            return exc


def _assert_one_line_naming(error: ConfigError, variable: str) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, message
    assert variable in message, message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(variable=st.sampled_from(DURATION_VARS), value=NEAR_DURATIONS)
def test_fuzzed_durations_load_or_fail_with_one_line(variable: str, value: str) -> None:
    loaded = _load_with({variable: value})
    if isinstance(loaded, ConfigError):
        _assert_one_line_naming(loaded, variable)
        return
    field = variable.removeprefix("JANITOR_").lower()
    duration = getattr(loaded, field)
    assert isinstance(duration, timedelta)
    assert timedelta(0) <= duration <= timedelta(days=3650)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=HOSTS_VALUES, insecure=st.booleans())
def test_fuzzed_hosts_load_or_fail_with_one_line(value: str, insecure: bool) -> None:
    loaded = _load_with(
        {"JANITOR_HOSTS": value, "JANITOR_ALLOW_INSECURE_TCP": "true" if insecure else "false"}
    )
    if isinstance(loaded, ConfigError):
        _assert_one_line_naming(loaded, "JANITOR_HOSTS")
        return
    names = [host.name for host in loaded.hosts]
    assert len(names) == len(set(names)) >= 1
    for host in loaded.hosts:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", host.name), host
        if host.is_tcp:
            assert re.fullmatch(r"tcp://[^\s@/]+:\d+", host.url), host
            # No TLS is configured here: only a loopback host, and only when allowed.
            assert insecure, host
            hostname = urlsplit(host.url).hostname or ""
            assert hostname == "localhost" or ipaddress.ip_address(hostname).is_loopback, host
        else:
            assert host.url.startswith("unix:///"), host
            assert len(host.url) > len("unix:///"), host


# --- 11. Secrets: a Redis password appears nowhere --------------------------------------------

# Throwaway passwords of a private test server, hunted for in everything the janitor shows.
PASSWORD = "s3cr3t-P4ss"  # noqa: S105
WRONG_PASSWORD = "wr0ng-Passw0rd"  # noqa: S105
FLOWER_AUTH = "inspector:flower-pw"


def _http_get(url: str, auth: str) -> tuple[int, str]:
    request = urllib.request.Request(url)  # noqa: S310  (a loopback http URL of the test)
    request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        return 0, str(error)


def _flower_worker_conf(base: str, hostname: str) -> str:
    """Flower's worker listing, once it holds the worker's configuration (asked for now)."""
    code, body = _http_get(f"{base}/api/workers?refresh=1", FLOWER_AUTH)
    if code != 200:
        return ""
    workers = json.loads(body)
    conf = (workers.get(hostname) or {}).get("conf") or {}
    return body if "broker_url" in conf else ""


def _cli_views(alpha: Engine, server: PrivateRedis) -> dict[str, str]:
    """What the janitor command shows, on its good paths and its error paths."""
    seen = {}
    env = janitor_env(
        {"alpha": alpha.url}, redis_url=server.url, max_runtime="1s", stopped_grace="1s"
    )
    for log_format in ("json", "console"):
        run = run_janitor(
            ["sweep", "--dry-run", "--json"], {**env, "JANITOR_LOG_FORMAT": log_format}
        )
        assert run.code == 0, run.stderr
        assert "Redis not reachable" not in run.stderr, run.stderr
        seen[f"janitor sweep ({log_format} logs)"] = run.stdout + run.stderr
    run = run_janitor(["check"], env)
    assert run.code == 0, run.stdout
    assert f"ok    redis redis://:***@127.0.0.1:{server.port}/0" in run.stdout, run.stdout
    seen["janitor check"] = run.stdout + run.stderr
    # The error paths quote URLs too: a refused password, and a URL that does not parse.
    wrong = {**env, "JANITOR_REDIS_URL": server.url_with_password(WRONG_PASSWORD)}
    run = run_janitor(["sweep", "--dry-run", "--json"], wrong)
    assert "Redis not reachable" in run.stderr, run.stderr
    seen["janitor sweep, wrong password"] = run.stdout + run.stderr
    run = run_janitor(["check"], wrong)
    assert run.code == 1, run.stdout
    seen["janitor check, wrong password"] = run.stdout + run.stderr
    unparsable = f"redis://:{PASSWORD}@127.0.0.1:notaport/0"
    for command in ("sweep", "check"):
        run = run_janitor([command], {**env, "JANITOR_REDIS_URL": unparsable})
        assert run.code == 2, run.stdout + run.stderr
        seen[f"janitor {command}, unparsable URL"] = run.stdout + run.stderr
    return seen


def _service_views(
    alpha: Engine, server: PrivateRedis, procs: Processes, planted: list[str]
) -> dict[str, str]:
    """What a real worker, beat and Flower (behind basic auth) show once they have swept."""
    seen = {}
    client = alpha.client()
    ghost, exited = planted
    # DEBUG: every log line Celery, kombu and the janitor have is a place to leak.
    env = service_env(
        {"alpha": alpha.url}, server.url, max_runtime="1s", stopped_grace="1s", log_level="DEBUG"
    )
    worker = procs.worker(env)
    procs.beat(env)
    port = free_port()
    flower = procs.flower(env, port, FLOWER_AUTH)
    wait_for(
        lambda: (state_or_gone(client, ghost), state_or_gone(client, exited)) == ("exited", "gone"),
        timeout=60,
        what="the service to kill the ghost and remove the exited container",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    base = f"http://127.0.0.1:{port}"
    hostname = str(worker.hostname)
    seen["flower /api/workers (with conf)"] = wait_for(
        lambda: _flower_worker_conf(base, hostname),
        timeout=60,
        what="Flower to show the worker's configuration",
        interval=1,
        alive=procs.check_alive,
        details=flower.log_tail,
    )
    for path in ("/api/tasks", f"/worker/{hostname}", "/broker", "/workers", "/tasks"):
        code, body = _http_get(base + path, FLOWER_AUTH)
        assert code == 200, (path, code, body[:500])
        seen[f"flower {path}"] = body
    inspect = subprocess.run(
        celery_command("inspect", "conf", "--json", "--timeout", "10"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert "broker_url" in inspect.stdout, inspect.stdout + inspect.stderr
    seen["celery inspect conf"] = inspect.stdout + inspect.stderr
    with server.client() as redis_client:
        keys = list(redis_client.scan_iter(match="celery-task-meta-*"))
        results = [json.loads(redis_client.get(key) or b"null") for key in keys]
    # A tick that waited past its `expires` on a loaded machine is stored REVOKED: no report.
    tasks = {r["result"]["task"] for r in results if r and r.get("status") == "SUCCESS"}
    assert tasks == {"kill-ghosts", "remove-stopped"}, results
    seen["task results in Redis"] = json.dumps(results)
    procs.stop_all()
    for process in procs.started:
        seen[f"{process.role} log file"] = process.log_path.read_text(errors="replace")
    # The URL is there to be seen, masked: the hunt below looks where it would leak.
    assert f"127.0.0.1:{server.port}" in seen["worker log file"]
    return seen


def test_a_redis_password_appears_in_no_log_report_or_view(alpha: Engine, tmp_path: Path) -> None:
    client = alpha.client()
    ghost = run_running(client, labels={**MANAGED, "janitor.stopped-grace": "1h"})
    exited = run_exited(client, labels=MANAGED)
    bystanders = plant_bystanders(client)
    with PrivateRedis(password=PASSWORD) as server, Processes(tmp_path) as procs:
        seen = _cli_views(alpha, server) | _service_views(alpha, server, procs, [ghost, exited])
    leaks = [where for where, text in seen.items() if PASSWORD in text or WRONG_PASSWORD in text]
    assert not leaks, f"the Redis password shows in: {leaks}"
    assert not disturbed(client, bystanders)


# --- 12. Self-protection: the janitor's own container and compose project -----------------------

OWN = "0123456789abcdef" * 4
OTHER = "fedcba9876543210" * 4
ROOT_LINE = "600 550 0:52 / / rw,relatime master:300 - overlay overlay rw,lowerdir=/l,upperdir=/u"


def _bind(source: str, target: str, mount_id: int = 620) -> str:
    return f"{mount_id} 600 254:1 {source} {target} rw,relatime - ext4 /dev/vda1 rw"


MOUNTINFO_CASES = {
    "inside a container": (
        [
            ROOT_LINE,
            _bind(f"/var/lib/docker/containers/{OWN}/resolv.conf", "/etc/resolv.conf", 621),
            _bind(f"/var/lib/docker/containers/{OWN}/hostname", "/etc/hostname", 622),
            _bind(f"/var/lib/docker/containers/{OWN}/hosts", "/etc/hosts", 623),
        ],
        {OWN},
    ),
    "data root on a filesystem of its own": (
        [ROOT_LINE, _bind(f"/containers/{OWN}/hostname", "/etc/hostname")],
        {OWN},
    ),
    "only one of the three files": (
        [ROOT_LINE, _bind(f"/srv/docker/containers/{OWN}/hosts", "/etc/hosts")],
        {OWN},
    ),
    "on the host, every container's shm mount": (
        [
            "30 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
            f"700 30 0:60 / /var/lib/docker/containers/{OTHER}/mounts/shm rw,nosuid shared:200"
            " - tmpfs shm rw,size=65536k",
            _bind(f"/var/lib/docker/containers/{OTHER}/hostname", f"/mnt/{OTHER}/hostname"),
        ],
        set(),
    ),
    "hostname file from elsewhere": (
        [ROOT_LINE, _bind(f"/var/lib/kubelet/pods/{OWN}/etc-hosts", "/etc/hosts")],
        set(),
    ),
    "not a full id": (
        [ROOT_LINE, _bind(f"/var/lib/docker/containers/{OWN[:12]}/hostname", "/etc/hostname")],
        set(),
    ),
    "upper-case hex": (
        [ROOT_LINE, _bind(f"/var/lib/docker/containers/{OWN.upper()}/hostname", "/etc/hostname")],
        set(),
    ),
    "empty": ([], set()),
}


@pytest.mark.parametrize("case", list(MOUNTINFO_CASES))
def test_own_container_ids_from_mountinfo(tmp_path: Path, case: str) -> None:
    lines, expected = MOUNTINFO_CASES[case]
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("".join(f"{line}\n" for line in lines))
    assert own_container_ids(mountinfo) == expected


def test_own_container_ids_without_mountinfo(tmp_path: Path) -> None:
    assert own_container_ids(tmp_path / "missing") == frozenset()


COMPOSE = "com.docker.compose.project"


@dataclass
class ComposeHost:
    own: str
    ours: dict[str, str]  # id -> state it must keep
    their_ghost: str
    their_exited: str
    bystanders: dict[str, str]


def _plant_compose(client: docker.DockerClient) -> ComposeHost:
    """The janitor's own container in project janitor-stack, siblings past every budget, and
    a build-farm project whose containers are fair game."""
    ours = {**MANAGED, COMPOSE: "janitor-stack"}
    theirs = {**MANAGED, COMPOSE: "build-farm"}
    own = run_running(client, labels=ours)
    siblings = {
        own: "running",
        run_running(client, labels=ours): "running",
        run_exited(client, labels=ours): "exited",
        create_only(client, labels=ours): "created",
    }
    planted = ComposeHost(
        own=own,
        ours=siblings,
        their_ghost=run_running(client, labels={**theirs, "janitor.stopped-grace": "1h"}),
        their_exited=run_exited(client, labels=theirs),
        bystanders=plant_bystanders(client),
    )
    time.sleep(AGE)
    return planted


def _assert_only_theirs_acted_on(
    client: docker.DockerClient, planted: ComposeHost, reports: list[dict[str, Any]]
) -> None:
    acted = {(a["id"], a["action"], a["outcome"]) for r in reports for a in r["actions"]}
    assert acted == {
        (planted.their_ghost, "kill", "done"),
        (planted.their_exited, "remove", "done"),
    }
    assert state_or_gone(client, planted.their_ghost) == "exited"
    assert state_or_gone(client, planted.their_exited) == "gone"
    assert not disturbed(client, planted.ours)
    assert not disturbed(client, planted.bystanders)


def test_the_janitors_own_compose_project_is_exempt_in_a_sweep(alpha: Engine) -> None:
    client = alpha.client()
    planted = _plant_compose(client)
    config = Settings(
        hosts=f"alpha={alpha.url}",  # type: ignore[arg-type]
        max_runtime="1s",  # type: ignore[arg-type]
        stopped_grace="1s",  # type: ignore[arg-type]
        created_grace="1s",  # type: ignore[arg-type]
        stop_timeout="0s",  # type: ignore[arg-type]
    )
    reports = []
    with DockerHost(config.host("alpha"), timeout=timedelta(seconds=10)) as host:
        own_ids = frozenset({planted.own})
        projects = host.compose_projects_of(own_ids)
        assert projects == {"janitor-stack"}
        rules = config.rules(own_ids, projects)
        for task in (Task.KILL_GHOSTS, Task.REMOVE_STOPPED):
            options = SweepOptions.from_settings(config, task)
            reports.append(
                sweep_containers(host, rules, options, NoLease(), host.info().now).to_dict()
            )
    _assert_only_theirs_acted_on(client, planted, reports)


def test_the_janitor_finds_its_own_container_from_its_mounts(alpha: Engine) -> None:
    """The janitor CLI in a mount namespace where /etc/hostname is bound from the data root,
    as Docker does for every container: it must recognise that container as its own and
    spare its whole compose project."""
    client = alpha.client()
    planted = _plant_compose(client)
    hostname_path = client.api.inspect_container(planted.own)["HostnamePath"]
    assert Path(hostname_path).name == "hostname"
    env = janitor_env(
        {"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s", created_grace="1s"
    )
    script = 'mount --bind "$1" /etc/hostname && exec "$2" sweep --json'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
         hostname_path, JANITOR],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    run = Run(done.returncode, done.stdout, done.stderr)
    assert run.code == 0, run.stderr
    _assert_only_theirs_acted_on(client, planted, run.reports)


def test_without_its_mounts_the_same_sweep_spares_no_sibling(alpha: Engine) -> None:
    """The control for the test above: outside that namespace the project is fair game."""
    client = alpha.client()
    planted = _plant_compose(client)
    env = janitor_env(
        {"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s", created_grace="1s"
    )
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 0, run.stderr
    removed = {a["id"] for a in run.report("alpha", "remove-stopped")["actions"]}
    ours_stopped = {c for c, s in planted.ours.items() if s in ("exited", "created")}
    assert removed == {planted.their_exited, *ours_stopped}
    assert not disturbed(client, planted.bystanders)
