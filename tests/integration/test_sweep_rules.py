"""Every rule of the contract, through `janitor sweep --json`, against a real private dockerd."""

from __future__ import annotations

import time

import pytest
from support.cli import janitor_env, sweep_in_process, sweep_json
from support.containers import (
    TERM_AWARE,
    create_only,
    run_exited,
    run_paused,
    run_restarting,
    run_running,
    state,
)

from janitor.model import Task
from sandbox.daemons import Engine
from sandbox.engines import clears_restart_policies, selected_engine

# Every engine of the matrix runs these (see .ci/run).
pytestmark = pytest.mark.conformance

MANAGED = {"janitor.managed": "true"}
PROTECTED = {"janitor.managed": "true", "janitor.protect": "true"}
# Long enough that a container planted at the start of a test is still young at its end.
LONG = "1h"
AGE = 1.5  # seconds to wait so that a 1s budget is exceeded


def outcomes(report: dict[str, object]) -> dict[str, tuple[str, str, str]]:
    actions = report["actions"]
    assert isinstance(actions, list)
    return {a["id"]: (a["action"], a["reason"], a["outcome"]) for a in actions}


def test_ghost_over_budget_is_killed_and_young_one_is_left(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED, name="ghost")
    time.sleep(3)
    young = run_running(alpha.client(), labels=MANAGED, name="young")
    # In process: the young container must not age past 2s while a CLI would start up.
    report = sweep_in_process("alpha", alpha.url, Task.KILL_GHOSTS, max_runtime="2s")
    assert outcomes(report) == {ghost: ("kill", "over_runtime_budget", "done")}
    assert report["status"] == "ok"
    assert report["counts"] == {"done": 1}
    assert state(alpha, ghost) == "exited"
    assert state(alpha, young) == "running"


def test_runtime_label_overrides_the_budget_both_ways(alpha: Engine) -> None:
    shorter = run_running(alpha.client(), labels={**MANAGED, "janitor.max-runtime": "1s"})
    longer = run_running(alpha.client(), labels={**MANAGED, "janitor.max-runtime": "PT1H"})
    time.sleep(AGE)
    strict = sweep_json(
        janitor_env({"alpha": alpha.url}, max_runtime=LONG), "--task", "kill-ghosts"
    )
    assert outcomes(strict.report("alpha", "kill-ghosts")) == {
        shorter: ("kill", "over_runtime_budget", "done")
    }
    lenient = sweep_json(
        janitor_env({"alpha": alpha.url}, max_runtime="1s"), "--task", "kill-ghosts"
    )
    assert outcomes(lenient.report("alpha", "kill-ghosts")) == {}
    assert state(alpha, longer) == "running"


def test_term_aware_ghost_stops_gracefully(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED, command=TERM_AWARE)
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stop_timeout="30s")
    run = sweep_json(env, "--task", "kill-ghosts")
    assert outcomes(run.report("alpha", "kill-ghosts"))[ghost][2] == "done"
    # Exit code 0 from its TERM trap, not 137 from the SIGKILL that follows the stop timeout.
    assert alpha.api().inspect_container(ghost)["State"]["ExitCode"] == 0


@pytest.mark.parametrize(
    ("selector", "in_scope_labels"),
    [
        ("janitor.managed=true", MANAGED),
        ("janitor.managed", {"janitor.managed": "anything"}),
        ("team=ide", {"team": "ide"}),
        ("*", {}),
    ],
)
def test_protected_and_unmanaged_are_untouched_under_every_selector(
    alpha: Engine, selector: str, in_scope_labels: dict[str, str]
) -> None:
    client = alpha.client()
    in_scope = run_running(client, labels=in_scope_labels)
    in_scope_exited = run_exited(client, labels=in_scope_labels)
    protected = run_running(client, labels={**in_scope_labels, "janitor.protect": "true"})
    protected_exited = run_exited(client, labels={**in_scope_labels, "janitor.protect": "TRUE"})
    untouchables = [protected, protected_exited]
    if selector != "*":
        untouchables += [
            run_running(client, labels={"team": "other"}),
            run_exited(client, labels={"team": "other", "janitor.stopped-grace": "1s"}),
        ]
    time.sleep(AGE)
    env = janitor_env(
        {"alpha": alpha.url},
        selector=selector,
        max_runtime="1s",
        stopped_grace="1s",
        created_grace="1s",
    )
    run = sweep_json(env)
    assert run.code == 0, run.stderr
    acted = set(outcomes(run.report("alpha", "kill-ghosts"))) | set(
        outcomes(run.report("alpha", "remove-stopped"))
    )
    assert in_scope in acted
    assert in_scope_exited in acted
    assert not acted & set(untouchables)
    assert state(alpha, protected) == "running"
    assert state(alpha, protected_exited) == "exited"
    assert all(state(alpha, c) != "gone" for c in untouchables)


def test_exited_past_grace_removed_within_grace_kept_label_both_ways(alpha: Engine) -> None:
    client = alpha.client()
    old = run_exited(client, labels=MANAGED, exit_code=3)
    short_label = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "1s"})
    long_label = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "2h"})
    time.sleep(AGE)
    fresh = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "30s"})
    run = sweep_json(
        janitor_env({"alpha": alpha.url}, stopped_grace="1s"), "--task", "remove-stopped"
    )
    assert outcomes(run.report("alpha", "remove-stopped")) == {
        old: ("remove", "exited_past_grace", "done"),
        short_label: ("remove", "exited_past_grace", "done"),
    }
    assert state(alpha, old) == "gone"
    assert state(alpha, short_label) == "gone"
    assert state(alpha, long_label) == "exited"
    assert state(alpha, fresh) == "exited"
    strict = sweep_json(
        janitor_env({"alpha": alpha.url}, stopped_grace=LONG), "--task", "remove-stopped"
    )
    assert outcomes(strict.report("alpha", "remove-stopped")) == {}


def test_created_never_started_removed_after_created_grace(alpha: Engine) -> None:
    client = alpha.client()
    old = create_only(client, labels=MANAGED)
    time.sleep(3)
    young = create_only(client, labels=MANAGED)
    report = sweep_in_process(
        "alpha", alpha.url, Task.REMOVE_STOPPED, created_grace="2s", stopped_grace=LONG
    )
    assert outcomes(report) == {old: ("remove", "created_never_started", "done")}
    assert state(alpha, young) == "created"


def test_paused_and_restarting_are_untouched(alpha: Engine) -> None:
    client = alpha.client()
    paused = run_paused(client, labels=MANAGED)
    restarting = run_restarting(client, labels=MANAGED)
    time.sleep(AGE)
    env = janitor_env(
        {"alpha": alpha.url}, selector="*", max_runtime="1s", stopped_grace="1s", created_grace="1s"
    )
    run = sweep_json(env)
    acted = set(outcomes(run.report("alpha", "kill-ghosts"))) | set(
        outcomes(run.report("alpha", "remove-stopped"))
    )
    assert paused not in acted
    assert state(alpha, paused) == "paused"
    # A restart-looping container is "restarting" most of the time and "running" for an
    # instant; in either state it must not be removed (it is never stopped for good).
    assert state(alpha, restarting) != "gone"
    remove_actions = outcomes(run.report("alpha", "remove-stopped"))
    assert restarting not in remove_actions


def test_restart_always_ghost_stays_down_after_daemon_restart(alpha: Engine) -> None:
    client = alpha.client()
    always = run_running(client, labels=MANAGED, restart_policy={"Name": "always"})
    on_failure = run_running(
        client, labels=MANAGED, restart_policy={"Name": "on-failure", "MaximumRetryCount": 5}
    )
    time.sleep(AGE)
    run = sweep_json(janitor_env({"alpha": alpha.url}, max_runtime="1s"), "--task", "kill-ghosts")
    report = run.report("alpha", "kill-ghosts")
    assert {o[2] for o in outcomes(report).values()} == {"done"}
    assert set(outcomes(report)) == {always, on_failure}
    alpha.restart()
    time.sleep(1)  # restart policies act right after the daemon comes up
    assert state(alpha, always) == "exited"
    assert state(alpha, on_failure) == "exited"
    policy = alpha.api().inspect_container(always)["HostConfig"]["RestartPolicy"]["Name"]
    if clears_restart_policies(selected_engine()):
        assert policy in ("no", "")
    else:
        # No update route: stopped all the same, and the report says what it could not do.
        assert policy == "always"
        assert {a["detail"] for a in report["actions"]} == {"restart_policy_kept"}


def test_auto_remove_containers_are_not_removed_by_the_janitor(alpha: Engine) -> None:
    client = alpha.client()
    # AutoRemove applies once the container ran; a created one shows the exemption plainly.
    auto = create_only(client, labels=MANAGED, auto_remove=True)
    plain = create_only(client, labels=MANAGED)
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, created_grace="1s")
    run = sweep_json(env, "--task", "remove-stopped")
    assert set(outcomes(run.report("alpha", "remove-stopped"))) == {plain}
    assert state(alpha, auto) == "created"


def test_auto_remove_ghost_is_killed_and_the_daemon_removes_it(alpha: Engine) -> None:
    ghost = run_running(alpha.client(), labels=MANAGED, auto_remove=True)
    time.sleep(AGE)
    run = sweep_json(janitor_env({"alpha": alpha.url}, max_runtime="1s"), "--task", "kill-ghosts")
    assert outcomes(run.report("alpha", "kill-ghosts"))[ghost][2] == "done"
    deadline = time.monotonic() + 10
    while state(alpha, ghost) != "gone" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state(alpha, ghost) == "gone"


@pytest.mark.parametrize(("remove_volumes", "volume_survives"), [("true", False), ("false", True)])
def test_anonymous_volume_goes_with_the_container(
    alpha: Engine, remove_volumes: str, volume_survives: bool
) -> None:
    api = alpha.api()
    exited = run_exited(alpha.client(), labels=MANAGED, volumes=["/data"])
    mounts = api.inspect_container(exited)["Mounts"]
    volume = next(m["Name"] for m in mounts if m["Destination"] == "/data")
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, stopped_grace="1s", remove_volumes=remove_volumes)
    run = sweep_json(env, "--task", "remove-stopped")
    assert outcomes(run.report("alpha", "remove-stopped"))[exited][2] == "done"
    names = {v["Name"] for v in api.volumes()["Volumes"] or []}
    assert (volume in names) is volume_survives


def test_bad_label_makes_a_container_ineligible_and_is_reported(alpha: Engine) -> None:
    client = alpha.client()
    bad_running = run_running(client, labels={**MANAGED, "janitor.max-runtime": "banana"})
    bad_exited = run_exited(client, labels={**MANAGED, "janitor.stopped-grace": "-5m"})
    time.sleep(AGE)
    env = janitor_env({"alpha": alpha.url}, max_runtime="1s", stopped_grace="1s")
    run = sweep_json(env)
    assert run.code == 0
    assert outcomes(run.report("alpha", "kill-ghosts")) == {
        bad_running: ("kill", "bad_label", "refused")
    }
    assert outcomes(run.report("alpha", "remove-stopped")) == {
        bad_exited: ("remove", "bad_label", "refused")
    }
    assert state(alpha, bad_running) == "running"
    assert state(alpha, bad_exited) == "exited"
