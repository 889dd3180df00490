"""What differs between engines (Docker 20.10 and 26, Podman 4.3 and 5), as the janitor meets
it: the engine's name, a stable identity, sweep after sweep with Redis, restart policies that
cannot be cleared, 404s that are not "gone", events the engine does not filter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from support.cli import janitor_env, run_janitor, sweep_json
from support.containers import create_only, run_exited, run_running, state_or_gone

from janitor.dockerhost import DockerHost
from janitor.model import HostConfig
from sandbox.daemons import Engine
from sandbox.engines import clears_restart_policies, is_podman, selected_engine

pytestmark = pytest.mark.conformance

MANAGED = {"janitor.managed": "true"}
AGE = 1.5
SWEEPS = 10
AGED = {"max_runtime": "1s", "stopped_grace": "1s", "created_grace": "1s"}


@pytest.fixture
def docker(alpha: Engine) -> Iterator[DockerHost]:
    with DockerHost(HostConfig("alpha", alpha.url), timeout=timedelta(seconds=10)) as host:
        yield host


def test_check_names_the_engine_and_its_identity_holds_from_check_to_check(
    alpha: Engine, redis_url: str
) -> None:
    env = janitor_env({"alpha": alpha.url}, redis_url=redis_url)
    product = "Podman" if is_podman(selected_engine()) else "Docker"
    assert sweep_json(env, "--task", "kill-ghosts").code == 0  # records the identity
    for _ in range(2):
        run = run_janitor(["check"], env)
        assert run.code == 0, run.stdout
        [host_line] = [line for line in run.stdout.splitlines() if " host alpha " in line]
        assert f": {product} " in host_line
        assert f"daemon {alpha.daemon_id}," in host_line
        assert "events readable" in host_line


def test_ten_sweeps_in_a_row_are_ok_and_nothing_is_gone_while_it_exists(
    alpha: Engine, redis_url: str
) -> None:
    client = alpha.client()
    ghost = run_running(client, labels=MANAGED, restart_policy={"Name": "always"})
    plain_ghost = run_running(client, labels=MANAGED)
    finished = run_exited(client, labels=MANAGED)
    never_started = create_only(client, labels=MANAGED)
    protected = run_running(client, labels={**MANAGED, "janitor.protect": "true"})
    unmanaged = run_running(client)
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, redis_url=redis_url, **AGED)
    outcomes: dict[str, list[tuple[str, str]]] = {}
    for _ in range(SWEEPS):
        run = sweep_json(env, "--task", "all")
        assert run.code == 0, run.stdout + run.stderr
        for report in run.reports:
            assert report["status"] == "ok", report
            for action in report["actions"]:
                outcomes.setdefault(action["id"], []).append((action["outcome"], action["detail"]))
                if action["outcome"] == "gone":
                    assert state_or_gone(client, action["id"]) == "gone", action
    kill_detail = "" if clears_restart_policies(selected_engine()) else "restart_policy_kept"
    assert outcomes[ghost][0] == ("done", kill_detail)
    assert outcomes[plain_ghost][0] == ("done", "")
    for removed in (finished, never_started):
        assert outcomes[removed] == [("done", "")]
        assert state_or_gone(client, removed) == "gone"
    # A killed ghost is removed by a later sweep's stopped task, a grace after it stopped.
    for killed in (ghost, plain_ghost):
        assert state_or_gone(client, killed) == "gone"
        assert [outcome for outcome, _ in outcomes[killed]] == ["done", "done"]
    assert protected not in outcomes
    assert unmanaged not in outcomes
    assert state_or_gone(client, protected) == state_or_gone(client, unmanaged) == "running"


def test_a_restart_always_ghost_is_stopped_on_every_engine_with_the_truth_about_its_policy(
    alpha: Engine, docker: DockerHost
) -> None:
    """Podman < 5.1 answers the update route with a 404: the kill goes on, never `gone`."""
    ghost = run_running(alpha.client(), labels=MANAGED, restart_policy={"Name": "always"})
    container = docker.inspect(ghost)
    caveat = docker.kill(container, timedelta(0))
    assert state_or_gone(alpha.client(), ghost) == "exited"
    expected = None if clears_restart_policies(selected_engine()) else "restart_policy_kept"
    assert caveat == expected


def test_starts_are_read_from_the_events_of_every_engine(alpha: Engine, docker: DockerHost) -> None:
    client = alpha.client()
    before = docker.info().now
    # The window's bounds are whole seconds: begin after anything earlier tests started.
    time.sleep(1.1)
    started = [run_exited(client) for _ in range(3)]
    create_only(client)
    time.sleep(1.1)
    after = docker.info().now
    starts = docker.starts_between(before + timedelta(seconds=1), after)
    # Create, die and the like are events too; only the three starts count.
    assert len(starts) == len(started)
