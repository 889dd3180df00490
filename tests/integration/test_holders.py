"""Namespace holders against a real dockerd: members joined with `--network container:`,
`--pid container:`, `--ipc container:` and `--volumes-from`, through the CLI, the service and
the engine's re-check. Members are unmanaged unless said otherwise: dependents count whatever
the selector."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import docker
import pytest
from support.celery import reports, service_env, task_results
from support.cli import janitor_env, sweep_json
from support.containers import SLEEP_FOREVER, state

from janitor.children import wait_for
from janitor.dockerhost import DockerHost
from janitor.kinds import sweep_containers
from janitor.locks import NoLease
from janitor.model import Container, HostConfig, Task
from janitor.project import ProjectHolder
from janitor.settings import Settings
from janitor.sweep import SweepOptions
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine
from sandbox.image import IMAGE

MANAGED = {"janitor.managed": "true"}
AGE = 1.5


def create(
    api: docker.APIClient,
    *,
    labels: dict[str, str] | None = None,
    command: tuple[str, ...] = SLEEP_FOREVER,
    start: bool = True,
    **host_config: Any,
) -> str:
    """A container with `host_config` as the SDK takes it (network_mode, pid_mode, ...)."""
    host_config.setdefault("network_mode", "none")
    created = api.create_container(
        IMAGE,
        command=list(command),
        labels=labels or {},
        host_config=api.create_host_config(**host_config),
    )
    container_id = str(created["Id"])
    if start:
        api.start(container_id)
    return container_id


def holder(api: docker.APIClient, labels: dict[str, str], name: str | None = None) -> str:
    # IPC is private by default; a holder shares it on purpose.
    created = api.create_container(
        IMAGE,
        command=list(SLEEP_FOREVER),
        labels=labels,
        name=name,
        volumes=["/shared"],
        host_config=api.create_host_config(network_mode="none", ipc_mode="shareable"),
    )
    api.start(created["Id"])
    return str(created["Id"])


def actions(run: Any, task: str) -> dict[str, tuple[str, str]]:
    return {a["id"]: (a["reason"], a["outcome"]) for a in run.report("alpha", task)["actions"]}


def finished_line(run: Any, task: str) -> dict[str, Any]:
    (line,) = [e for e in run.log_events() if e["event"] == "sweep_finished" and e["task"] == task]
    return line


def test_a_ghost_holder_with_a_running_member_is_neither_killed_nor_removed_by_the_cli(
    alpha: Engine,
) -> None:
    api = alpha.api()
    ghost_holder = holder(api, MANAGED)
    member = create(api, network_mode=f"container:{ghost_holder}")
    unrelated = create(api, labels=MANAGED)
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    run = sweep_json(env)
    assert run.code == 0, run.stderr
    assert actions(run, "kill-ghosts") == {unrelated: ("over_runtime_budget", "done")}
    assert finished_line(run, "kill-ghosts")["held"] == 1
    assert (state(alpha, ghost_holder), state(alpha, member)) == ("running", "running")


@pytest.mark.parametrize(
    "joins",
    [
        pytest.param(lambda h: {"pid_mode": f"container:{h}"}, id="pid"),
        pytest.param(lambda h: {"ipc_mode": f"container:{h}"}, id="ipc"),
        pytest.param(lambda h: {"volumes_from": [h]}, id="volumes-from"),
        pytest.param(lambda h: {"volumes_from": ["the-holder:ro"]}, id="volumes-from-by-name"),
        pytest.param(lambda h: {"network_mode": "container:the-holder"}, id="network-by-name"),
        pytest.param(lambda h: {"network_mode": f"container:{h[:12]}"}, id="network-short-id"),
    ],
)
def test_every_kind_of_dependent_holds_its_holder_and_exited_ones_still_hold_removal(
    alpha: Engine, joins: Any
) -> None:
    api = alpha.api()
    ghost_holder = holder(api, MANAGED, name="the-holder")
    member = create(api, **joins(ghost_holder))
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    run = sweep_json(env, "--task", "kill-ghosts")
    assert actions(run, "kill-ghosts") == {}, run.stderr
    assert state(alpha, ghost_holder) == "running"
    # The member exits; the holder may now be killed, never removed while the member exists.
    api.stop(member, timeout=0)
    run = sweep_json(env)
    assert actions(run, "kill-ghosts") == {ghost_holder: ("over_runtime_budget", "done")}
    time.sleep(AGE)
    run = sweep_json(env, "--task", "remove-stopped")
    assert actions(run, "remove-stopped") == {}
    assert finished_line(run, "remove-stopped")["held"] == 1
    assert state(alpha, ghost_holder) == "exited"


def test_a_member_past_its_budget_is_killed_while_its_holder_stays(alpha: Engine) -> None:
    api = alpha.api()
    project = ProjectHolder("build-7", labels=MANAGED)
    pause = holder(api, project.holder_labels)
    member = create(
        api, labels={**MANAGED, **project.member_labels}, network_mode=f"container:{pause}"
    )
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s")
    run = sweep_json(env, "--task", "kill-ghosts")
    assert actions(run, "kill-ghosts") == {member: ("over_runtime_budget", "done")}
    assert (state(alpha, pause), state(alpha, member)) == ("running", "exited")


def test_an_orphaned_project_holder_is_killed_after_its_grace_then_removed(
    alpha: Engine, redis_url: str
) -> None:
    api = alpha.api()
    project = ProjectHolder("build-8", labels=MANAGED)
    pause = holder(api, project.holder_labels)
    member = create(api, labels=project.member_labels, network_mode=f"container:{pause}")
    env = janitor_env({"alpha": alpha.url}, redis_url, holder_grace="2s", stopped_grace="1s")
    time.sleep(2.5)
    run = sweep_json(env)
    assert actions(run, "kill-ghosts") == {}, "not orphaned while its member runs"
    api.remove_container(member, force=True)
    # The first sweep that sees it orphaned starts its grace; no earlier instant is known.
    first = sweep_json(env, "--task", "kill-ghosts")
    assert actions(first, "kill-ghosts") == {}
    assert state(alpha, pause) == "running"
    time.sleep(2.5)
    run = sweep_json(env, "--task", "kill-ghosts")
    assert actions(run, "kill-ghosts") == {pause: ("holder_orphaned", "done")}
    time.sleep(AGE)
    run = sweep_json(env, "--task", "remove-stopped")
    assert actions(run, "remove-stopped") == {pause: ("exited_past_grace", "done")}
    assert state(alpha, pause) == "gone"


class JoiningHost(DockerHost):
    """The real adapter, with a member joining the holder right before the janitor's re-check."""

    def __init__(self, config: HostConfig, holder_id: str, join: Any) -> None:
        super().__init__(config, timeout=timedelta(seconds=10))
        self.holder_id = holder_id
        self.join = join
        self.inspected = 0

    def inspect(self, container_id: str) -> Container:
        if container_id == self.holder_id:
            self.inspected += 1
            if self.inspected == 2:
                self.join()
        return super().inspect(container_id)


@pytest.mark.parametrize("task", [Task.KILL_GHOSTS, Task.REMOVE_STOPPED])
def test_a_member_joining_between_the_decision_and_the_act_is_refused(
    alpha: Engine, task: Task
) -> None:
    api = alpha.api()
    target = holder(api, MANAGED)
    if task is Task.REMOVE_STOPPED:
        api.stop(target, timeout=0)
    time.sleep(AGE)
    settings = Settings(hosts=f"alpha={alpha.url}", max_runtime="1s", stopped_grace="1s")  # type: ignore[arg-type]
    joined: list[str] = []
    # A member may join a stopped holder's volumes; a namespace needs it running.
    joins = {"volumes_from": [target]} if task is Task.REMOVE_STOPPED else {}
    joins = joins or {"network_mode": f"container:{target}"}
    host = JoiningHost(settings.host("alpha"), target, lambda: joined.append(create(api, **joins)))
    with host:
        options = SweepOptions(task, stop_timeout=timedelta(0))
        report = sweep_containers(host, settings.rules(), options, NoLease(), host.info().now)
    assert [(r.outcome.value, r.detail) for r in report.results] == [("refused", "holder_in_use")]
    assert joined
    assert state(alpha, target) == ("running" if task is Task.KILL_GHOSTS else "exited")


def test_the_service_neither_kills_nor_removes_a_holder_with_a_running_member(
    alpha: Engine, redis_url: str, procs: Processes
) -> None:
    api = alpha.api()
    ghost_holder = holder(api, MANAGED)
    member = create(api, network_mode=f"container:{ghost_holder}")
    ghost = create(api, labels=MANAGED)
    env = service_env({"alpha": alpha.url}, redis_url, max_runtime="1s", stopped_grace="1s")
    worker = procs.worker(env)
    procs.beat(env)
    worker.wait_ready()
    wait_for(
        lambda: state(alpha, ghost) == "gone",
        timeout=30,
        what="the plain ghost killed and removed",
        alive=procs.check_alive,
        details=worker.log_tail,
    )
    held = wait_for(
        lambda: [
            e for e in worker.events("sweep_finished") if e["task"] == "kill-ghosts" and e["held"]
        ],
        timeout=20,
        what="a kill sweep that held the holder",
        alive=procs.check_alive,
    )
    assert held[-1]["held"] == 1
    assert (state(alpha, ghost_holder), state(alpha, member)) == ("running", "running")
    touched = {a["id"] for r in reports(task_results(redis_url)) for a in r["actions"]}
    assert ghost_holder not in touched
