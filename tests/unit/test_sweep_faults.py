"""Each Docker call of a sweep failing, as a busy daemon fails it, through the real adapter.

A fake daemon (tests/support/fakedaemon.py) answers one call with a 500 or never answers it;
the real tick, engine and adapter sweep it. A host-level call (version, info, list) or any
call that times out fails the sweep, logged `sweep_failed` with its error at error level; a
single container's call answered with an error fails that action only. The CLI keeps every
other host's report and exits 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.cli import run_janitor
from support.fakedaemon import (
    CONTAINER_ID,
    HANG,
    INFO,
    INSPECT,
    LIST,
    PING,
    REMOVE,
    STOP,
    UPDATE,
    FakeDaemon,
    Reply,
    error_reply,
    healthy_replies,
    json_reply,
)
from support.fakehost import emitted

from janitor.model import Status, SweepReport, Task
from janitor.settings import Settings
from janitor.tick import sweep_host

BOOM = "driver failed: device or resource busy"
FAILURES = {"500": error_reply(500, BOOM), "timeout": HANG}
# Each host-level call, by the operation name the adapter's errors give it.
# The client's first call asks /_ping for the API version (janitor.dockerhost.transport).
HOST_CALLS = {PING: "version", INFO: "info", LIST: "list"}
CONTAINER_CALLS = [INSPECT, UPDATE, STOP, REMOVE]


def exited_replies() -> dict[str, Reply]:
    """The healthy fake daemon, its one container exited three hours ago."""
    replies = healthy_replies()
    listed = json.loads(replies[LIST].body)
    listed[0]["State"] = "exited"
    inspected = json.loads(replies[INSPECT].body)
    inspected["State"] = {
        "Status": "exited",
        "StartedAt": "2026-12-01T08:59:59.5Z",
        "FinishedAt": "2026-12-01T09:00:00.5Z",
    }
    return {**replies, LIST: json_reply(listed), INSPECT: json_reply(inspected)}


def daemon_failing(call: str, failure: str) -> FakeDaemon:
    replies = exited_replies() if call == REMOVE else healthy_replies()
    return FakeDaemon(replies={**replies, call: FAILURES[failure]})


def task_for(call: str) -> Task:
    return Task.REMOVE_STOPPED if call == REMOVE else Task.KILL_GHOSTS


@pytest.fixture(params=sorted(FAILURES))
def failure(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def sweep_once(daemon: FakeDaemon, task: Task) -> tuple[SweepReport, list[dict[str, Any]]]:
    settings = Settings(hosts=f"alpha={daemon.url}", docker_timeout="1s")  # type: ignore[arg-type]
    with capture_logs() as logs:
        outcome = sweep_host(settings, "alpha", task, redis_client=None)
    assert isinstance(outcome, SweepReport)
    return outcome, logs


@pytest.mark.parametrize("call", HOST_CALLS)
def test_a_host_call_failing_fails_the_sweep_and_says_why(call: str, failure: str) -> None:
    with closing(daemon_failing(call, failure)) as daemon:
        report, logs = sweep_once(daemon, Task.KILL_GHOSTS)
    expected = BOOM if failure == "500" else "timed out"
    assert report.status is Status.FAILED
    assert expected in report.error
    # "answered list with 500 ..." or "did not answer list: ... timed out"
    assert re.search(rf"answer(ed)? {HOST_CALLS[call]}\b", report.error), report.error
    line = emitted(logs, "sweep_failed")
    assert [e["log_level"] for e in line] == ["error"]
    assert expected in line[0]["error"]
    assert "POST" not in " ".join(daemon.routes_seen()), "nothing was acted on"


@pytest.mark.parametrize("call", CONTAINER_CALLS)
def test_a_container_call_answered_with_an_error_fails_that_action_only(call: str) -> None:
    with closing(daemon_failing(call, "500")) as daemon:
        report, logs = sweep_once(daemon, task_for(call))
    assert report.status is Status.OK
    if call == INSPECT:
        # Not inspected, not decided: the next tick tries again; the cap counted it.
        assert report.results == ()
        emitted(logs, "inspect_failed", container_id=CONTAINER_ID)
    else:
        assert report.counts == {"failed": 1}
        assert BOOM in report.results[0].detail
        emitted(logs, "action_failed", container_id=CONTAINER_ID)
    assert not [e for e in logs if e["event"] == "sweep_failed"]


@pytest.mark.parametrize("call", CONTAINER_CALLS)
def test_a_container_call_that_times_out_fails_the_sweep(call: str) -> None:
    with closing(daemon_failing(call, "timeout")) as daemon:
        report, logs = sweep_once(daemon, task_for(call))
    assert report.status is Status.FAILED
    assert "timed out" in report.error
    assert "timed out" in emitted(logs, "sweep_failed")[0]["error"]
    if call != INSPECT:
        emitted(logs, "sweep_halted", status="failed")


@pytest.fixture
def three_daemons() -> Iterator[dict[str, FakeDaemon]]:
    daemons = {
        "list-500": daemon_failing(LIST, "500"),
        "list-hangs": daemon_failing(LIST, "timeout"),
        "good": FakeDaemon(),
    }
    try:
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.close()


def test_the_cli_keeps_every_other_hosts_report_and_exits_1(
    three_daemons: dict[str, FakeDaemon],
) -> None:
    env = {
        "JANITOR_HOSTS": ",".join(f"{name}={d.url}" for name, d in three_daemons.items()),
        "JANITOR_REDIS_URL": "redis://127.0.0.1:1/0",
        "JANITOR_DOCKER_TIMEOUT": "1s",
    }
    run = run_janitor(["sweep", "--json", "--task", "kill-ghosts"], env)
    assert run.code == 1, run.stdout + run.stderr
    reports = {r["host"]: r for r in run.reports}
    assert set(reports) == set(three_daemons)
    assert reports["good"]["status"] == "ok"
    assert reports["good"]["counts"] == {"done": 1}
    assert BOOM in reports["list-500"]["error"]
    assert "timed out" in reports["list-hangs"]["error"]
    failed = [
        json.loads(line)
        for line in run.stderr.splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "sweep_failed"
    ]
    assert {(e["host"], e["level"]) for e in failed} == {
        ("list-500", "error"),
        ("list-hangs", "error"),
    }
    assert "Traceback" not in run.stderr
