"""The test harness itself: private daemons, planted containers and Redis behave as promised."""

from __future__ import annotations

import docker
import pytest
import redis
import requests
from support.containers import (
    TERM_AWARE,
    container_ids,
    create_only,
    run_exited,
    run_paused,
    run_restarting,
    run_running,
    status,
)

from sandbox.daemons import Engine
from sandbox.image import IMAGE
from sandbox.redisserver import RedisHost


def test_two_hosts_are_two_daemons(alpha: Engine, beta: Engine) -> None:
    assert alpha.daemon_id != beta.daemon_id
    assert alpha.url != beta.url
    run_running(alpha.client())
    assert container_ids(beta.client()) == set()


def test_planted_containers_reach_their_states(alpha: Engine) -> None:
    client = alpha.client()
    planted = {
        "running": run_running(client, labels={"janitor.test": "yes"}),
        "exited": run_exited(client, exit_code=3),
        "created": create_only(client),
        "paused": run_paused(client),
        "restarting": run_restarting(client),
    }
    assert {state: status(client, cid) for state, cid in planted.items()} == {
        state: state for state in planted
    }
    exited = client.api.inspect_container(planted["exited"])
    assert exited["State"]["ExitCode"] == 3
    running = client.api.inspect_container(planted["running"])
    assert running["Config"]["Labels"] == {"janitor.test": "yes"}
    assert running["Config"]["Image"] == IMAGE
    assert running["HostConfig"]["NetworkMode"] == "none"
    assert container_ids(client) == set(planted.values())
    # The list endpoint counts a restarting container as running, between its restarts too.
    assert container_ids(client, all=False) == {
        planted["running"],
        planted["paused"],
        planted["restarting"],
    }


def test_anonymous_volume_is_created(alpha: Engine) -> None:
    client = alpha.client()
    container_id = run_exited(client, volumes=["/data"])
    mounts = client.api.inspect_container(container_id)["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("volume", "/data")]
    volume_names = {v["Name"] for v in client.api.volumes()["Volumes"]}
    assert mounts[0]["Name"] in volume_names


def test_restart_keeps_containers(alpha: Engine) -> None:
    client = alpha.client()
    exited = run_exited(client)
    running = run_running(client, command=TERM_AWARE)
    daemon_id = alpha.daemon_id
    alpha.restart()
    assert alpha.daemon_id == daemon_id
    assert container_ids(client) == {exited, running}
    # Without live-restore a daemon shutdown stops what was running.
    assert status(client, running) == "exited"


def test_frozen_daemon_times_out_until_thawed(alpha: Engine) -> None:
    # An explicit version: asking the frozen daemon for it would time out in the constructor.
    impatient = docker.DockerClient(base_url=alpha.url, timeout=1, version="1.41")
    try:
        alpha.freeze()
        with pytest.raises(requests.exceptions.ReadTimeout):
            impatient.ping()
        alpha.thaw()
        assert impatient.ping()
    finally:
        impatient.close()


def test_reset_brings_a_stopped_daemon_back_empty(alpha: Engine) -> None:
    run_exited(alpha.client())
    alpha.stop()
    alpha.reset()
    assert alpha.client().ping()
    assert container_ids(alpha.client()) == set()


def test_redis_answers(redis_url: str, redis_server: RedisHost) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set("key", "value")
    assert redis_server.client().get("key") == b"value"


def test_redis_restart_keeps_the_url(redis_url: str, redis_server: RedisHost) -> None:
    redis_server.kill()
    redis_server.restart()
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
