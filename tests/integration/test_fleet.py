"""The fleet view against a live fleet (issue 14): real workers and a beat on one private Redis,
two private daemons, a host whose daemon is not there and a host that no worker serves.

`janitor status` must tell them apart from the Redis records alone: fresh, stale (its worker
stopped), failing (its daemon unreachable), never swept with no live worker; and beat must
withhold the ticks of the host nobody serves, so its queue stays empty.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from support.celery import service_env
from support.cli import run_janitor

from janitor.children import wait_for
from janitor.fleet import STALE_AFTER_INTERVALS
from janitor.keys import last_report, live_worker
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine

INTERVAL = 2


def _status(env: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
    run = run_janitor(["status", "--json"], env)
    return run.code, json.loads(run.stdout)


def _row(document: Mapping[str, Any], host: str, task: str = "kill-ghosts") -> dict[str, Any]:
    (row,) = [r for r in document["sweeps"] if r["host"] == host and r["task"] == task]
    return dict(row)


def test_status_tells_fresh_stale_failing_and_unserved_hosts_apart(
    alpha: Engine, beta: Engine, redis_url: str, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path}/no-daemon.sock"
    hosts = {"alpha": alpha.url, "beta": beta.url, "gone": nowhere, "orphan": nowhere}
    timing = {"kill_interval": f"{INTERVAL}s", "remove_interval": f"{INTERVAL}s"}
    fleet_env = service_env(hosts, redis_url, **timing)
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    with Processes(tmp_path) as procs:
        serving_alpha = procs.worker(
            service_env({"alpha": alpha.url, "gone": nowhere}, redis_url, **timing), "alpha"
        )
        serving_beta = procs.worker(service_env({"beta": beta.url}, redis_url, **timing), "beta")
        serving_alpha.wait_ready()
        serving_beta.wait_ready()
        beat = procs.beat(fleet_env)
        wait_for(
            lambda: all(
                client.hexists(last_report(host, task), "ran_at")
                for host in ("alpha", "beta", "gone")
                for task in ("kill-ghosts", "remove-stopped")
            ),
            timeout=8 * INTERVAL,
            what="a last report of every served host",
            alive=procs.check_alive,
        )
        serving_beta.stop()
        assert client.get(live_worker("beta")) is None, "a warm shutdown removes its mark"
        # The ticks it had reserved (prefetch: one per pool process) go back to its queue.
        left_by_beta = client.llen("janitor.beta")
        wait_for(
            lambda: not _row(_status(fleet_env)[1], "beta")["healthy"],
            timeout=(STALE_AFTER_INTERVALS + 2) * INTERVAL,
            what="beta to go stale",
            alive=procs.check_alive,
        )
        code, document = _status(fleet_env)
        withheld = beat.events("tick_withheld")
        # Asked with alpha alone configured, while alpha's worker still sweeps it.
        only_alpha = run_janitor(["status"], service_env({"alpha": alpha.url}, redis_url, **timing))

    assert code == 1
    assert document["ok"] is False
    alpha_row = _row(document, "alpha")
    assert alpha_row["healthy"], alpha_row
    assert alpha_row["live_worker"] == serving_alpha.hostname
    assert alpha_row["status"] == "ok"
    beta_row = _row(document, "beta")
    assert beta_row["status"] == "ok", "its last sweep was fine"
    assert "3 intervals" in beta_row["why"]
    assert beta_row["live_worker"] is None
    gone_row = _row(document, "gone")
    assert gone_row["status"] == "failed"
    assert gone_row["why"].startswith("last sweep failed")
    assert gone_row["live_worker"] == serving_alpha.hostname
    orphan = _row(document, "orphan")
    assert orphan["status"] == "never"
    assert orphan["live_worker"] is None
    # Beat withheld every tick of the hosts nobody served: their queues did not grow.
    assert orphan["queue_length"] == 0
    assert left_by_beta <= 2
    assert _row(document, "beta", "remove-stopped")["queue_length"] == left_by_beta
    assert {e["host"] for e in withheld} == {"orphan", "beta"}

    assert only_alpha.code == 0, "alpha's sweeps are ok and recent: the others do not count here"
    lines = only_alpha.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "TASK", "HEALTH", "STATUS"]
    assert any(line.startswith("beta (not configured here)") for line in lines)
