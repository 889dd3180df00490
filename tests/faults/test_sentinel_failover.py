"""A Redis Sentinel failover under a running worker and beat (issue 14), on real processes: a
private master, a replica and three `redis-sentinel`s; the master is SIGKILLed mid-run and the
replica promoted.

What must hold: the worker and beat carry on by themselves (no restart) and sweep again on the
new master; no container is acted on twice; every sweep lease on the new master carries its
TTL (none is stuck); protected and unmanaged bystanders survive.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from support.bystanders import disturbed, plant_bystanders
from support.celery import service_env
from support.containers import run_exited, run_running

from janitor.children import wait_for
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine
from sandbox.sentinel import MASTER_NAME, SentinelGroup

MANAGED = {"janitor.managed": "true"}
# Kept once killed, so a kill stays visible as `exited` instead of turning into a removal.
GHOST = {**MANAGED, "janitor.stopped-grace": "1h"}
INTERVAL = 3


def _states(host: Engine, ids: list[str]) -> dict[str, str]:
    listed = {c["Id"]: c["State"] for c in host.api().containers(all=True)}
    return {c: listed.get(c, "gone") for c in ids}


def _after(events: list[dict[str, object]], instant: datetime) -> list[dict[str, object]]:
    return [e for e in events if datetime.fromisoformat(str(e["timestamp"])) > instant]


def test_a_failover_mid_run_is_carried_through_and_acts_on_no_container_twice(
    alpha: Engine, tmp_path: Path
) -> None:
    client = alpha.client()
    with SentinelGroup() as group, Processes(tmp_path) as procs:
        env = service_env(
            {"alpha": alpha.url},
            group.url,
            redis_master=MASTER_NAME,
            max_runtime="1s",
            stopped_grace="1s",
            kill_interval=f"{INTERVAL}s",
            remove_interval=f"{INTERVAL}s",
        )
        bystanders = plant_bystanders(client)
        before = [run_running(client, labels=GHOST) for _ in range(3)]
        worker = procs.worker(env)
        worker.wait_ready()
        beat = procs.beat(env)
        wait_for(
            lambda: set(_states(alpha, before).values()) == {"exited"},
            timeout=6 * INTERVAL,
            what="the first ghosts killed through the first master",
            alive=procs.check_alive,
            details=worker.log_tail,
        )

        old_port = group.master_port()
        killed_at = datetime.now(UTC)
        group.master().kill()
        after = [run_running(client, labels=GHOST) for _ in range(3)]
        stopped = [run_exited(client, labels=MANAGED) for _ in range(2)]
        new_master = group.wait_for_failover(old_port)
        promoted_at = datetime.now(UTC)

        wait_for(
            lambda: (
                set(_states(alpha, after).values()) == {"exited"}
                and set(_states(alpha, stopped).values()) == {"gone"}
            ),
            timeout=60,
            what="ghosts killed and stopped containers removed through the promoted master",
            alive=procs.check_alive,
            details=worker.log_tail,
        )
        wait_for(
            lambda: [
                e
                for e in _after(worker.events("sweep_finished"), promoted_at)
                if e["status"] == "ok"
            ],
            timeout=4 * INTERVAL,
            what="an ok sweep after the failover",
            alive=procs.check_alive,
        )
        procs.check_alive()  # neither worker nor beat needed a restart
        assert _after(beat.sent_ticks(), promoted_at), "beat sent no tick after the failover"
        done = Counter(str(e["container_id"]) for e in worker.events("action_done"))
        assert done, worker.log_tail()
        assert max(done.values()) == 1, done
        assert set(done) == {*before, *after, *stopped}
        leases = new_master.client().keys("janitor:sweep:*")
        for key in leases:
            assert 0 < new_master.client().pttl(key) <= INTERVAL * 1000, key
        assert not disturbed(client, bystanders)
        assert _after(worker.events(), killed_at), "the worker logged nothing after the kill"
