"""Races, dry run, the blast-radius cap, leases, hosts that are down: what keeps a sweep safe."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
import redis
from support.cli import janitor_env, run_janitor, sweep_json
from support.containers import container_ids, run_exited, run_running, state

from janitor.dockerhost import DockerHost
from janitor.keys import sweep_lease
from janitor.kinds import sweep_containers
from janitor.locks import NoLease
from janitor.model import Container, HostConfig, Task
from janitor.settings import Settings
from janitor.sweep import SweepOptions
from sandbox.daemons import Engine

# Every engine of the matrix runs these (see .ci/run).
pytestmark = pytest.mark.conformance

MANAGED = {"janitor.managed": "true"}
AGE = 1.5
REPORT_KEYS = {"task", "host", "dry_run", "status", "daemon_time", "scanned", "duration_s"}
REPORT_KEYS |= {"actions", "counts"}


class MeddlingHost(DockerHost):
    """The janitor's real adapter, with someone else acting on a container right before the
    janitor's re-check: the race the sweep must lose gracefully."""

    def __init__(self, config: HostConfig, meddle: dict[str, object]) -> None:
        super().__init__(config, timeout=timedelta(seconds=10))
        self._meddle = meddle
        self._inspected: set[str] = set()

    def inspect(self, container_id: str) -> Container:
        if container_id in self._inspected and container_id in self._meddle:
            action = self._meddle.pop(container_id)
            assert callable(action)
            action()
        self._inspected.add(container_id)
        return super().inspect(container_id)


def _settings(host: Engine, **overrides: object) -> Settings:
    return Settings(hosts=f"alpha={host.url}", **overrides)  # type: ignore[arg-type]


def test_container_removed_by_someone_else_is_gone(alpha: Engine) -> None:
    exited = run_exited(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    settings = _settings(alpha, stopped_grace="1s")
    meddler = MeddlingHost(
        settings.host("alpha"), {exited: lambda: alpha.api().remove_container(exited)}
    )
    with meddler:
        now = meddler.info().now
        report = sweep_containers(
            meddler, settings.rules(), SweepOptions(Task.REMOVE_STOPPED), NoLease(), now
        )
    assert [(r.action.container_id, r.outcome.value) for r in report.results] == [(exited, "gone")]
    assert report.status.value == "ok"


def test_container_restarted_after_the_decision_is_not_killed(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    settings = _settings(alpha, max_runtime="1s")
    meddler = MeddlingHost(
        settings.host("alpha"), {ghost: lambda: alpha.api().restart(ghost, timeout=0)}
    )
    with meddler:
        now = meddler.info().now
        options = SweepOptions(Task.KILL_GHOSTS, stop_timeout=timedelta(0))
        report = sweep_containers(meddler, settings.rules(), options, NoLease(), now)
    (result,) = report.results
    assert result.outcome.value == "refused"
    assert result.detail == "restarted_since_decision"
    assert state(alpha, ghost) == "running"


def test_container_started_after_the_decision_is_not_removed(alpha: Engine) -> None:
    exited = run_exited(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    settings = _settings(alpha, stopped_grace="1s")
    meddler = MeddlingHost(settings.host("alpha"), {exited: lambda: alpha.api().start(exited)})
    with meddler:
        now = meddler.info().now
        report = sweep_containers(
            meddler, settings.rules(), SweepOptions(Task.REMOVE_STOPPED), NoLease(), now
        )
    (result,) = report.results
    assert result.outcome.value == "refused"
    # Podman says `stopped` for one whose process ended before its cleanup ran.
    assert state(alpha, exited) in ("running", "exited", "stopped")


def test_dry_run_changes_nothing_and_plans_everything(alpha: Engine) -> None:
    client = alpha.client()
    ghost = run_running(client, labels=MANAGED)
    exited = run_exited(client, labels=MANAGED)
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    before = {c: state(alpha, c) for c in (ghost, exited)}
    run = sweep_json(env, "--dry-run")
    assert run.code == 0, run.stderr
    for task, expected in (("kill-ghosts", ghost), ("remove-stopped", exited)):
        report = run.report("alpha", task)
        assert report["dry_run"] is True
        assert [(a["id"], a["outcome"]) for a in report["actions"]] == [(expected, "planned")]
        assert report["counts"] == {"planned": 1}
    assert {c: state(alpha, c) for c in (ghost, exited)} == before
    # The variable does the same as the flag.
    run = sweep_json({**env, "JANITOR_DRY_RUN": "true"})
    assert {c: state(alpha, c) for c in (ghost, exited)} == before
    assert all(r["dry_run"] for r in run.reports)


def test_blast_radius_cap_aborts_with_zero_changes(alpha: Engine) -> None:
    exited = [run_exited(alpha.client(), labels=MANAGED) for _ in range(4)]
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, stopped_grace="1s", max_actions="3")
    run = sweep_json(env, "--task", "remove-stopped")
    assert run.code == 1
    report = run.report("alpha", "remove-stopped")
    assert report["status"] == "aborted"
    assert report["counts"] == {"refused": 4}
    assert all(state(alpha, c) == "exited" for c in exited)
    aborted = [e for e in run.log_events() if e["event"] == "sweep_aborted"]
    assert aborted
    assert aborted[0]["level"] == "error"
    assert aborted[0]["eligible"] == 4
    # At the cap exactly, the sweep goes ahead.
    run = sweep_json({**env, "JANITOR_MAX_ACTIONS": "4"}, "--task", "remove-stopped")
    assert run.report("alpha", "remove-stopped")["counts"] == {"done": 4}


def test_two_hosts_one_down_the_other_is_still_swept(alpha: Engine, beta: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED)
    exited = run_exited(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    beta.stop()
    env = janitor_env({"alpha": alpha.url, "beta": beta.url}, max_runtime="1s", stopped_grace="1s")
    run = sweep_json(env)
    assert run.code == 1
    assert {(r["host"], r["task"], r["status"]) for r in run.reports} == {
        ("alpha", "kill-ghosts", "ok"),
        ("alpha", "remove-stopped", "ok"),
        ("beta", "kill-ghosts", "failed"),
        ("beta", "remove-stopped", "failed"),
    }
    failed = run.report("beta", "kill-ghosts")
    assert beta.url.removeprefix("unix://") in failed["error"]
    # Killed, and removed by the same run's stopped sweep when a slow engine took the grace.
    assert state(alpha, ghost) in ("exited", "gone")
    assert state(alpha, exited) == "gone"


def test_report_has_exactly_the_contract_fields(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    run = sweep_json(janitor_env({"alpha": alpha.url}, max_runtime="1s"), "--task", "kill-ghosts")
    (report,) = run.reports
    assert set(report) == REPORT_KEYS
    assert report["task"] == "kill-ghosts"
    assert report["host"] == "alpha"
    assert report["dry_run"] is False
    assert report["status"] == "ok"
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", report["daemon_time"]
    )
    assert isinstance(report["scanned"], int)
    assert report["scanned"] >= 1
    assert isinstance(report["duration_s"], float)
    (action,) = report["actions"]
    assert set(action) == {"id", "name", "action", "reason", "outcome", "detail"}
    assert action["id"] == ghost
    assert re.fullmatch(r"[0-9a-f]{64}", action["id"])
    assert action["name"]


def test_json_output_is_only_json_and_logs_go_to_stderr(alpha: Engine) -> None:
    run_running(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    run = sweep_json(janitor_env({"alpha": alpha.url}, max_runtime="1s"))
    assert run.stdout.lstrip().startswith("[")
    assert len(run.reports) == 2
    events = {e["event"] for e in run.log_events()}
    assert {"action_done", "sweep_finished"} <= events
    finished = [e for e in run.log_events() if e["event"] == "sweep_finished"]
    assert len(finished) == 2
    assert "Redis not reachable" in run.stderr


def test_human_table_lists_hosts_and_actions(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED, name="old-build")
    time.sleep(AGE)
    run = run_janitor(["sweep"], janitor_env({"alpha": alpha.url}, max_runtime="1s"))
    assert run.code == 0
    lines = run.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "TASK", "STATUS", "SCANNED"]
    assert any(line.split()[:3] == ["alpha", "kill-ghosts", "ok"] for line in lines)
    assert any(ghost[:12] in line and "old-build" in line and "done" in line for line in lines)


def test_held_lease_skips_the_host_and_changes_nothing(alpha: Engine, redis_url: str) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED)
    time.sleep(AGE)
    client = redis.Redis.from_url(redis_url)
    client.set(sweep_lease("alpha", "kill-ghosts"), "someone-else", px=60_000)
    env = janitor_env({"alpha": alpha.url}, redis_url=redis_url, max_runtime="1s")
    run = sweep_json(env, "--task", "kill-ghosts")
    assert run.code == 0
    assert run.reports == []
    assert "skipped" in run.stderr
    assert state(alpha, ghost) == "running"
    client.delete(sweep_lease("alpha", "kill-ghosts"))
    run = sweep_json(env, "--task", "kill-ghosts")
    assert run.report("alpha", "kill-ghosts")["counts"] == {"done": 1}
    assert client.get(sweep_lease("alpha", "kill-ghosts")) is None, "lease released after the sweep"
    client.close()


def test_wrong_daemon_behind_a_known_host_name_is_refused(
    alpha: Engine, beta: Engine, redis_url: str
) -> None:
    on_beta = run_running(beta.client(), labels=MANAGED)
    time.sleep(AGE)
    first = sweep_json(
        janitor_env({"alpha": alpha.url}, redis_url=redis_url), "--task", "kill-ghosts"
    )
    assert first.code == 0
    # The same name now points at another daemon: the janitor must refuse to touch it.
    swapped = janitor_env({"alpha": beta.url}, redis_url=redis_url, max_runtime="1s")
    run = sweep_json(swapped, "--task", "kill-ghosts")
    assert run.code == 1
    report = run.report("alpha", "kill-ghosts")
    assert report["status"] == "failed"
    assert "refusing to act" in report["error"]
    assert state(beta, on_beta) == "running"


def test_unknown_host_and_bad_config_exit_2_with_one_line(alpha: Engine) -> None:
    before = container_ids(alpha.client())
    run = run_janitor(["sweep", "--host", "nope"], janitor_env({"alpha": alpha.url}))
    assert run.code == 2
    assert run.stderr.strip().count("\n") == 0
    assert "nope" in run.stderr
    run = run_janitor(["sweep"], janitor_env({"alpha": alpha.url}, max_runtime="forever"))
    assert run.code == 2
    assert run.stderr.strip() == (
        "janitor: JANITOR_MAX_RUNTIME='forever' is invalid: not a duration: use 90s, 30m, 2h, "
        "7d, 1h30m, plain seconds (300) or ISO 8601 (PT2H, P1DT2H)"
    )
    assert run.stdout == ""
    assert container_ids(alpha.client()) == before


def test_check_reports_each_part(alpha: Engine, beta: Engine, redis_url: str) -> None:
    env = janitor_env({"alpha": alpha.url, "beta": beta.url}, redis_url=redis_url)
    run = run_janitor(["check"], env)
    assert run.code == 0, run.stdout
    lines = run.stdout.splitlines()
    assert lines[0].startswith("ok    configuration")
    assert any(line.startswith("ok    redis") for line in lines)
    assert sum(line.startswith("ok    host") for line in lines) == 2
    beta.stop()
    run = run_janitor(["check"], env)
    assert run.code == 1
    assert any(line.startswith("FAIL  host beta") for line in run.stdout.splitlines())
    run = run_janitor(["check"], {**env, "JANITOR_CONCURRENCY": "0"})
    assert run.code == 2
    assert run.stdout.startswith("FAIL  configuration: JANITOR_CONCURRENCY=")
