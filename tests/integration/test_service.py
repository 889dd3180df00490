"""The janitor as a service, end to end: real redis-server, real dockerd daemons, and real
`celery worker`, `celery beat`, Flower and `janitor run` processes.

Intervals are seconds (support.celery.SERVICE), so every wait is a poll with a deadline of a
bounded number of intervals, never a fixed sleep.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from support.celery import queued_messages, reports, service_env, task_result, task_results
from support.cli import JANITOR
from support.containers import container_ids, run_exited, run_running, state

from janitor.children import free_port, wait_for
from janitor.keys import live_worker, sweep_lease
from janitor.schedule import DEFAULT_QUEUE
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine
from sandbox.redisserver import RedisHost

MANAGED = {"janitor.managed": "true"}
# A ghost that stays `exited` once killed, so the test can see the kill and not a removal.
GHOST = {**MANAGED, "janitor.stopped-grace": "1h"}
PROTECTED = {**MANAGED, "janitor.protect": "true"}
AGED = {"max_runtime": "1s", "stopped_grace": "1s"}
REPORT_KEYS = {
    "task",
    "host",
    "dry_run",
    "status",
    "daemon_time",
    "scanned",
    "duration_s",
    "actions",
    "counts",
}
ACTION_KEYS = {"id", "name", "action", "reason", "outcome", "detail"}
TASKS = {"janitor.kill_ghosts": "kill-ghosts", "janitor.remove_stopped": "remove-stopped"}
EVERY_SWEEP = {(host, task) for host in ("alpha", "beta") for task in TASKS.values()}
READY_STATES = {"SUCCESS", "FAILURE", "REVOKED"}
CLEANUP_DEADLINE = 40.0


@dataclass
class Planted:
    """Containers planted on one host, by what the janitor must do with them."""

    host: Engine
    ghosts: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)
    survivors: dict[str, str] = field(default_factory=dict)  # id -> state it must keep

    def state(self, container_id: str) -> str:
        return state(self.host, container_id)

    def cleaned(self) -> bool:
        """Every ghost killed and kept, every stopped one removed."""
        return all(self.state(c) == "exited" for c in self.ghosts) and all(
            self.state(c) == "gone" for c in self.exited
        )

    def describe(self) -> str:
        states = {c[:12]: self.state(c) for c in [*self.ghosts, *self.exited, *self.survivors]}
        return f"{self.host.name}: {states}"


def plant_on(hosts: Sequence[Engine], **what: Any) -> list[Planted]:
    """The same containers on each host, planted on all hosts at once."""
    with ThreadPoolExecutor(len(hosts)) as pool:
        return list(pool.map(lambda host: plant(host, **what), hosts))


def plant(host: Engine, *, ghosts: int = 0, exited: int = 0, bystanders: bool = False) -> Planted:
    client = host.client()
    planted = Planted(host)
    planted.ghosts = [run_running(client, labels=GHOST) for _ in range(ghosts)]
    planted.exited = [run_exited(client, labels=MANAGED) for _ in range(exited)]
    if bystanders:
        # Old enough to be a ghost or past the grace: only their labels keep them.
        planted.survivors = {
            run_running(client, labels=PROTECTED): "running",
            run_exited(client, labels=PROTECTED): "exited",
            run_running(client): "running",
            run_exited(client): "exited",
        }
    return planted


def wait_cleaned(procs: Processes, *planted: Planted, timeout: float = CLEANUP_DEADLINE) -> None:
    wait_for(
        lambda: all(p.cleaned() for p in planted),
        timeout=timeout,
        what="every ghost killed and every stopped container removed",
        alive=procs.check_alive,
        details=lambda: "\n".join(p.describe() for p in planted),
    )


def done_actions(found: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    """(host, container id, action) -> how many reports say it was done."""
    return Counter(
        (report["host"], action["id"], action["action"])
        for report in found
        for action in report["actions"]
        if action["outcome"] == "done"
    )


def all_ready(redis_url: str, at_least: int) -> list[dict[str, Any]]:
    """The results, once at least `at_least` exist and every one of them is final."""
    results = task_results(redis_url)
    if len(results) >= at_least and all(r["status"] in READY_STATES for r in results):
        return results
    return []


def final_results(redis_url: str, task_ids: set[str]) -> list[dict[str, Any]]:
    """The results of those tasks, once every one of them is final."""
    found = [task_result(redis_url, task_id) for task_id in task_ids]
    if all(r is not None and r["status"] in READY_STATES for r in found):
        return [r for r in found if r is not None]
    return []


def assert_nothing_failed(results: list[dict[str, Any]]) -> None:
    """Every task succeeded, is still running, or was a tick that expired in the queue (a
    worker busy or slow to start reaches a tick after its `expires`, which is no failure)."""
    for result in results:
        assert result["status"] in {"SUCCESS", "STARTED", "REVOKED"}, result
        if result["status"] == "REVOKED":
            assert result["result"]["exc_message"] == ["expired"], result


@pytest.mark.conformance
def test_worker_and_beat_sweep_both_hosts_and_store_the_reports(
    alpha: Engine, beta: Engine, redis_url: str, procs: Processes
) -> None:
    env = service_env({"alpha": alpha.url, "beta": beta.url}, redis_url, **AGED)
    worker = procs.worker(env)
    procs.beat(env)
    planted = plant_on((alpha, beta), ghosts=2, exited=2, bystanders=True)

    expected = Counter(
        {(p.host.name, c, "kill"): 1 for p in planted for c in p.ghosts}
        | {(p.host.name, c, "remove"): 1 for p in planted for c in p.exited}
    )

    wait_cleaned(procs, *planted)

    # A report is stored after its sweep changed the containers: wait for those too.
    def stored() -> bool:
        found = reports(task_results(redis_url))
        swept = {(r["host"], r["task"]) for r in found}
        return swept == EVERY_SWEEP and done_actions(found) >= expected

    wait_for(stored, timeout=20, what="the reports of those sweeps", alive=procs.check_alive)
    for p in planted:
        assert {c: p.state(c) for c in p.survivors} == p.survivors, p.describe()
    # Sweeps go on: the log first, so every task it names already has a stored state.
    events = worker.events()
    results = task_results(redis_url)
    found = reports(results)
    assert done_actions(found) == expected
    bystanders = {c for p in planted for c in p.survivors}
    assert not {a["id"] for r in found for a in r["actions"]} & bystanders
    assert_nothing_failed(results)
    for result in results:
        report = result["result"]
        if result["status"] != "SUCCESS" or report["status"] == "skipped":
            continue  # running, or a backlogged tick that met its predecessor's lease
        assert set(report) == REPORT_KEYS, report
        assert report["task"] == TASKS[result["name"]]
        assert [report["host"]] == result["args"]
        assert result["queue"] == f"janitor.{report['host']}"
        assert result["worker"] == worker.hostname
        assert report["status"] == "ok"
        assert report["dry_run"] is False
        assert report["scanned"] >= len(report["actions"])
        assert sum(report["counts"].values()) == len(report["actions"])
        for action in report["actions"]:
            assert set(action) == ACTION_KEYS
            assert re.fullmatch(r"[0-9a-f]{64}", action["id"])
            expected_reason = (
                "over_runtime_budget" if action["action"] == "kill" else "exited_past_grace"
            )
            assert action["reason"] == expected_reason

    # Every line a sweep logs names the Celery task it ran in.
    by_id = {r["task_id"]: r["name"] for r in results}
    sweep_events = [e for e in events if e.get("logger") in ("janitor.sweep", "janitor.tick")]
    assert {e["event"] for e in sweep_events} >= {"action_done", "sweep_finished"}
    for event in sweep_events:
        assert by_id.get(event["task_id"]) == event["task_name"], event
        assert TASKS[event["task_name"]] == event["task"], event
    done = Counter(e["container_id"] for e in events if e["event"] == "action_done")
    assert done == Counter({c: 1 for p in planted for c in [*p.ghosts, *p.exited]})


def test_two_beats_on_one_schedule_act_on_each_container_once(
    alpha: Engine, beta: Engine, redis_url: str, procs: Processes
) -> None:
    # A stop timeout makes each kill take two seconds (the ghosts ignore SIGTERM), so the
    # second beat's tick arrives while the first beat's sweep still holds the lease. The
    # kill interval leaves room for it: 0.8 x 5s is above docker (1s) + stop timeout (2s).
    env = service_env(
        {"alpha": alpha.url, "beta": beta.url},
        redis_url,
        **AGED,
        stop_timeout="2s",
        kill_interval="5s",
    )
    worker = procs.worker(env)
    planted = plant_on((alpha, beta), ghosts=3, exited=10)
    worker.wait_ready()
    beats = [procs.beat(env, "beat-1"), procs.beat(env, "beat-2")]

    wait_cleaned(procs, *planted)
    # About three intervals: three ticks of each entry from each beat.
    wait_for(
        lambda: all(len(b.sent_ticks("remove-stopped:beta")) >= 3 for b in beats),
        timeout=30,
        what="three ticks of each beat",
        alive=procs.check_alive,
    )
    for beat in beats:
        beat.stop()
    ticks = sum(len(b.sent_ticks()) for b in beats)
    results = wait_for(
        lambda: all_ready(redis_url, ticks),
        timeout=60,
        what=f"a final result for each of the {ticks} ticks",
        alive=procs.check_alive,
        details=lambda: f"by state: {Counter(r['status'] for r in task_results(redis_url))}",
    )

    expected = {c: 1 for p in planted for c in [*p.ghosts, *p.exited]}
    assert Counter(e["container_id"] for e in worker.events("action_done")) == expected
    assert Counter(c for (_, c, _) in done_actions(reports(results)).elements()) == expected
    skipped = worker.events("sweep_skipped")
    assert skipped, "no duplicate tick met a held lease"
    for event in skipped:
        assert event["why"].startswith(f"{sweep_lease(event['host'], event['task'])} is held by")
    # Each skipped duplicate is a result too: a success that swept nothing and says why.
    skipped_results = [
        r["result"]
        for r in results
        if r["status"] == "SUCCESS" and r["result"]["status"] == "skipped"
    ]
    assert len(skipped) == len(skipped_results)
    for result in skipped_results:
        assert result["why"].startswith(sweep_lease(result["host"], result["task"]))
    assert len(results) == ticks
    assert_nothing_failed(results)


def test_each_worker_sweeps_only_the_hosts_it_is_configured_with(
    alpha: Engine, beta: Engine, redis_url: str, procs: Processes
) -> None:
    both = {"alpha": alpha.url, "beta": beta.url}
    workers = {
        name: procs.worker(service_env({name: both[name]}, redis_url, **AGED), f"worker-{name}")
        for name in both
    }
    procs.beat(service_env(both, redis_url, **AGED))
    planted = {p.host.name: p for p in plant_on((alpha, beta), ghosts=1, exited=2)}

    wait_cleaned(procs, *planted.values())
    # What a worker logs about a sweep comes after the sweep's changes: wait for it too.
    wait_for(
        lambda: all(
            {e["task"] for e in w.events("sweep_finished")} == set(TASKS.values())
            and len(w.events("action_done")) >= 3
            for w in workers.values()
        ),
        timeout=20,
        what="each worker to log both tasks and its actions",
        alive=procs.check_alive,
    )

    for name, worker in workers.items():
        events = worker.events()
        swept = {e["host"] for e in events if "host" in e}
        assert swept == {name}, f"{worker.hostname} logged sweeps of {swept}"
        received = [e["data"]["args"] for e in events if e["event"].endswith("] received")]
        assert received
        assert {tuple(ast.literal_eval(args)) for args in received} == {(name,)}
        done = {e["container_id"] for e in worker.events("action_done")}
        assert done == {*planted[name].ghosts, *planted[name].exited}
    results = task_results(redis_url)
    assert_nothing_failed(results)
    results = [r for r in results if r["status"] == "SUCCESS"]
    assert {(r["args"][0], r["worker"]) for r in results} == {
        (name, worker.hostname) for name, worker in workers.items()
    }


def test_a_tick_that_waited_past_its_interval_is_discarded_not_replayed(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    env = service_env({"alpha": alpha.url}, redis_url, **AGED)
    # A worker that died a moment ago: its live-worker mark outlives it by up to its TTL, and
    # meanwhile beat still sends. Those ticks pile up in the host's queue, each with its
    # `expires`. (Without a mark beat withholds them: tests/integration/test_fleet.py.)
    with redis.Redis.from_url(redis_url) as client:
        client.set(live_worker("alpha"), "died-a-moment-ago", px=60_000)
    beat = procs.beat(env)
    wait_for(
        lambda: len(queued_messages(redis_url, "janitor.alpha")) >= 4,
        timeout=30,
        what="four ticks queued",
        alive=procs.check_alive,
    )
    beat.stop()
    stale = queued_messages(redis_url, "janitor.alpha")
    stale_ids = {m["headers"]["id"] for m in stale}
    expiries = [datetime.fromisoformat(m["headers"]["expires"]) for m in stale]
    assert all(e.tzinfo is not None for e in expiries)
    # Planted after the last tick; once past its budget (1s), any tick replayed kills it.
    ghost = run_running(alpha.client(), labels=GHOST)
    planted_at = time.monotonic()
    wait_for(
        lambda: datetime.now(UTC) > max(expiries) and time.monotonic() - planted_at > 1.5,
        timeout=10,
        what="the queued ticks to expire and the ghost to outlive its budget",
    )

    worker = procs.worker(env)
    revoked = wait_for(
        lambda: final_results(redis_url, stale_ids),
        timeout=30,
        what="a result for every stale tick",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    assert {r["status"] for r in revoked} == {"REVOKED"}
    assert {r["result"]["exc_type"] for r in revoked} == {"TaskRevokedError"}
    assert all("expired" in str(r["result"]["exc_message"]) for r in revoked)
    discarded = {
        m.group(1)
        for e in worker.events()
        if (m := re.fullmatch(r"Discarding revoked task: janitor\.\w+\[(.+)\]", e["event"]))
    }
    assert discarded == stale_ids
    assert queued_messages(redis_url, "janitor.alpha") == []
    assert not worker.events("sweep_finished")
    assert not [e for e in worker.events() if e.get("logger") == "janitor.sweep"]
    assert state(alpha, ghost) == "running"

    # The first fresh tick is the first sweep.
    procs.beat(env, "beat-fresh")
    killed = wait_for(
        lambda: [e for e in worker.events("action_done") if e["container_id"] == ghost],
        timeout=CLEANUP_DEADLINE,
        what="the ghost killed by a fresh tick",
        alive=procs.check_alive,
    )
    assert state(alpha, ghost) == "exited"
    assert len(killed) == 1
    assert killed[0]["task_id"] not in stale_ids


def test_worker_and_beat_recover_from_a_redis_restart(
    alpha: Engine, redis_server: RedisHost, redis_url: str, procs: Processes
) -> None:
    env = service_env({"alpha": alpha.url}, redis_url, **AGED)
    worker = procs.worker(env)
    procs.beat(env)
    before = plant(alpha, ghosts=1, exited=1)
    wait_cleaned(procs, before)

    restarted_at = datetime.now(UTC)
    redis_server.restart()
    after = plant(alpha, ghosts=1, exited=1)
    wait_cleaned(procs, after, timeout=60)
    # The restarted Redis kept nothing (no persistence): these reports are from after it.
    expected = Counter(
        {("alpha", after.ghosts[0], "kill"): 1, ("alpha", after.exited[0], "remove"): 1}
    )
    wait_for(
        lambda: done_actions(reports(task_results(redis_url))) == expected,
        timeout=20,
        what="the reports of the sweeps after the restart",
        alive=procs.check_alive,
    )

    lost = [
        e
        for e in worker.events()
        if e["event"].startswith("consumer: Connection to broker lost")
        and datetime.fromisoformat(e["timestamp"]) > restarted_at
    ]
    assert lost, "the worker never noticed the restart"
    finished = [
        e
        for e in worker.events("sweep_finished")
        if datetime.fromisoformat(e["timestamp"]) > restarted_at
    ]
    assert {e["task"] for e in finished} == set(TASKS.values())
    assert all(e["status"] == "ok" for e in finished)


def test_a_task_for_an_unknown_host_fails_and_changes_nothing(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    planted = plant(alpha, ghosts=1, exited=1)
    before = {c: state(alpha, c) for c in container_ids(alpha.client())}
    env = service_env({"alpha": alpha.url}, redis_url, **AGED)
    worker = procs.worker(env)
    client = Celery("client", broker=redis_url, backend=redis_url)
    try:
        # The janitor's router sends a host name it does not know to the default queue,
        # which every worker reads; a bare client has to name it.
        sent = client.send_task("janitor.kill_ghosts", args=["nope"], queue=DEFAULT_QUEUE)
        task_id = sent.id
    finally:
        client.close()

    result = wait_for(
        lambda: (r := task_result(redis_url, task_id)) and r["status"] in READY_STATES and r,
        timeout=30,
        what="the task's result",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    assert result["status"] == "FAILURE"
    assert result["result"]["exc_type"] == "UnknownHostError"
    assert "nope" in str(result["result"]["exc_message"])
    assert {c: state(alpha, c) for c in container_ids(alpha.client())} == before
    assert planted.state(planted.ghosts[0]) == "running"
    assert not [e for e in worker.events() if e.get("logger") == "janitor.sweep"]


def _http_get(url: str, auth: str | None = None, *, post: bool = False) -> tuple[int, bytes]:
    # A loopback http URL of the test.
    request = urllib.request.Request(url, data=b"" if post else None)  # noqa: S310
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def _flower_json(base: str, path: str, auth: str) -> Any:
    code, body = _http_get(base + path, auth)
    return json.loads(body) if code == 200 else None


def _session_members(sid: int) -> list[str]:
    """Live processes of a session: `pid command` each."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(f"{entry.name} {cmdline}")
    return members


def _redis_answers(url: str) -> bool:
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="sigterm"),
        # What a terminal's Ctrl-C does: SIGINT to every process of the foreground group.
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="ctrl-c"),
    ],
)
def test_janitor_run_serves_flower_behind_basic_auth_and_sweeps(
    alpha: Engine, tmp_path: Path, stop: Callable[[int], None]
) -> None:
    ghost = run_running(alpha.client(), labels=GHOST)
    own_redis = f"redis://127.0.0.1:{free_port()}/0"
    port = free_port()
    auth = "user:secret"
    env: Mapping[str, str] = {
        **service_env({"alpha": alpha.url}, own_redis, max_runtime="1s"),
        "FLOWER_PORT": str(port),
        "FLOWER_BASIC_AUTH": auth,
        "XDG_STATE_HOME": str(tmp_path),
    }
    assert not _redis_answers(own_redis)
    log_path = tmp_path / "janitor-run.log"
    with log_path.open("wb") as log:
        run = subprocess.Popen(
            [JANITOR, "run"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive() -> None:
        if run.poll() is not None:
            raise AssertionError(f"janitor run exited with {run.returncode}:\n{tail()}")

    def tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])

    base = f"http://127.0.0.1:{port}"
    try:
        workers = wait_for(
            # refresh: ask the workers now rather than list those Flower has heard of.
            lambda: (
                _flower_answers(base, auth) and _flower_json(base, "/api/workers?refresh=1", auth)
            ),
            timeout=60,
            what="Flower to list the janitor's worker",
            interval=0.5,
            alive=alive,
            details=tail,
        )
        assert _redis_answers(own_redis), "janitor run did not start its own Redis"
        assert any(name.startswith("celery@") for name in workers), workers
        assert _http_get(base + "/api/workers")[0] == 401
        assert _http_get(base + "/api/workers", "user:wrong")[0] == 401
        assert _http_get(base + "/api/workers", "intruder:secret")[0] == 401
        tasks = wait_for(
            lambda: [
                t
                for t in (_flower_json(base, "/api/tasks", auth) or {}).values()
                if t.get("name") in TASKS
            ],
            timeout=30,
            what="Flower to list a janitor task",
            interval=0.5,
            alive=alive,
            details=tail,
        )
        assert {tuple(ast.literal_eval(t["args"])) for t in tasks} == {("alpha",)}
        _assert_an_operators_view(base, auth, next(iter(workers)))
        wait_for(
            lambda: state(alpha, ghost) == "exited",
            timeout=CLEANUP_DEADLINE,
            what="janitor run to kill the ghost",
            alive=alive,
            details=tail,
        )
        state_dir = tmp_path / "container-janitor"
        assert any(state_dir.glob("celerybeat-schedule*")), list(state_dir.iterdir())
        assert (state_dir / "redis").is_dir()
        # What must be gone afterwards is there now: the check below can see it.
        members = _session_members(run.pid)
        for part in ("redis-server", "janitor --quiet worker", "janitor --quiet flower"):
            assert any(part in member for member in members), (part, members)
    finally:
        if run.poll() is None:
            stop(run.pid)
        try:
            code = run.wait(60)
        finally:
            leftovers = _session_members(run.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
    assert code == 0, tail()
    assert leftovers == [], f"janitor run left children behind: {leftovers}"
    _assert_json_lines_only(log_path)
    assert not _redis_answers(own_redis)


def _assert_an_operators_view(base: str, auth: str, worker_name: str) -> None:
    """Flower's task list shows each sweep's host and report, and Flower offers no controls."""
    code, page = _http_get(base + "/tasks", auth)
    columns = re.findall(r'<th data-column="([a-z_]+)">', page.decode())
    assert code == 200
    assert columns == ["name", "args", "state", "result", "received", "runtime", "worker"]
    shutdown = f"{base}/api/worker/shutdown/{worker_name}"
    assert _http_get(shutdown, auth, post=True)[0] == 403, "Flower is read-only"


# Written by Celery from its signal handlers, where logging could deadlock: left as they are.
_CELERY_SHUTDOWN_NOTICE = re.compile(r"worker: (Warm|Cold) shutdown|worker: Hitting Ctrl\+C again")


def _assert_json_lines_only(log_path: Path) -> None:
    """Redis logs to its own file; the worker, beat and Flower log JSON lines only. The
    supervisor's own words to the operator are the `janitor:` lines."""
    plain = [
        line
        for line in log_path.read_text().splitlines()
        if line.strip()
        and not line.startswith("janitor: ")
        and not _CELERY_SHUTDOWN_NOTICE.match(line)
        and not _is_json_object(line)
    ]
    assert plain == [], "\n".join(plain)


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _flower_answers(base: str, auth: str) -> bool:
    try:
        return _http_get(base + "/healthcheck", auth)[0] == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
