"""Plant containers in known states on a test daemon; every helper returns the full id."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import docker

from sandbox.daemons import Engine
from sandbox.image import IMAGE

RestartPolicy = Mapping[str, str | int]

# PID 1 without a SIGTERM handler ignores it, so stopping this escalates to SIGKILL.
SLEEP_FOREVER = ("sleep", "100000")
# Stops at once on SIGTERM: `wait` returns on a trapped signal, a foreground sleep would not.
TERM_AWARE = ("sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait $!; done")

RESTARTING_TIMEOUT = 10.0
# Podman's inspect of a container between two of its states (see _is_transient_podman_error).
TRANSIENT_RETRIES = 20
TRANSIENT_PAUSE = 0.05


def run_running(
    client: docker.DockerClient,
    *,
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    restart_policy: RestartPolicy | None = None,
    command: Sequence[str] = SLEEP_FOREVER,
    auto_remove: bool = False,
    volumes: Sequence[str] | None = None,
) -> str:
    """A started container; `volumes=["/data"]` gives it an anonymous volume at /data."""
    container_id = create_only(
        client,
        labels=labels,
        name=name,
        restart_policy=restart_policy,
        command=command,
        auto_remove=auto_remove,
        volumes=volumes,
    )
    client.api.start(container_id)
    return container_id


def run_exited(
    client: docker.DockerClient,
    *,
    labels: Mapping[str, str] | None = None,
    exit_code: int = 0,
    name: str | None = None,
    volumes: Sequence[str] | None = None,
) -> str:
    """A container that ran to completion with `exit_code` (its FinishedAt is set)."""
    container_id = run_running(
        client, labels=labels, name=name, command=("sh", "-c", f"exit {exit_code}"), volumes=volumes
    )
    client.api.wait(container_id, timeout=30)
    return container_id


def create_only(
    client: docker.DockerClient,
    *,
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    restart_policy: RestartPolicy | None = None,
    command: Sequence[str] = SLEEP_FOREVER,
    auto_remove: bool = False,
    volumes: Sequence[str] | None = None,
) -> str:
    """A created, never started container (StartedAt is the zero time)."""
    api = client.api
    host_config = api.create_host_config(
        network_mode="none",
        restart_policy=dict(restart_policy) if restart_policy else None,
        auto_remove=auto_remove,
    )
    created = api.create_container(
        IMAGE,
        command=list(command),
        labels=dict(labels or {}),
        name=name,
        # The low-level API is the one that takes bare paths as anonymous volumes.
        volumes=list(volumes) if volumes else None,
        host_config=host_config,
    )
    return str(created["Id"])


def run_paused(
    client: docker.DockerClient,
    *,
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    command: Sequence[str] = SLEEP_FOREVER,
    volumes: Sequence[str] | None = None,
) -> str:
    container_id = run_running(client, labels=labels, name=name, command=command, volumes=volumes)
    client.api.pause(container_id)
    return container_id


def run_restarting(
    client: docker.DockerClient,
    *,
    labels: Mapping[str, str] | None = None,
    name: str | None = None,
    restart_policy: RestartPolicy | None = None,
) -> str:
    """A container that exits 1 at once under a restart policy (`always` unless given).

    Best effort: it spends nearly all its time in the daemon's restart backoff, and this waits
    up to RESTARTING_TIMEOUT to see it there, but returns the id either way.
    """
    container_id = run_running(
        client,
        labels=labels,
        name=name,
        restart_policy=restart_policy or {"Name": "always"},
        command=("false",),
    )
    deadline = time.monotonic() + RESTARTING_TIMEOUT
    while status(client, container_id) != "restarting" and time.monotonic() < deadline:
        time.sleep(0.05)
    return container_id


def status(client: docker.DockerClient, container_id: str) -> str:
    """Docker's one-word state: created, running, paused, restarting, exited, dead..."""
    for _ in range(TRANSIENT_RETRIES):
        try:
            return _inspected_status(client, container_id)
        except docker.errors.APIError as error:
            if not _is_transient_podman_error(error):
                raise
        time.sleep(TRANSIENT_PAUSE)
    return _inspected_status(client, container_id)


def _inspected_status(client: docker.DockerClient, container_id: str) -> str:
    return str(client.api.inspect_container(container_id)["State"]["Status"])


def _is_transient_podman_error(error: docker.errors.APIError) -> bool:
    """Podman 4.3 answers an inspect that races a restart-looping container's exit with a 500
    "read /proc/<pid>/cgroup: no such file or directory": the pid it just read is gone. The
    next inspect sees the container's new state; the janitor itself leaves such a container
    for its next tick (inspect_failed), so only the harness retries."""
    explanation = str(error.explanation or "")
    return error.status_code == 500 and "/proc/" in explanation and "cgroup" in explanation


def container_ids(client: docker.DockerClient, *, all: bool = True) -> set[str]:
    return {container["Id"] for container in client.api.containers(all=all, quiet=True)}


def state_or_gone(client: docker.DockerClient, container_id: str) -> str:
    """`status`, or "gone" once the container no longer exists."""
    try:
        return status(client, container_id)
    except docker.errors.NotFound:
        return "gone"
    except docker.errors.APIError as error:
        # Podman 4.3 answers an inspect racing the container's removal with a 500 "does not
        # exist in database: no such container".
        if "no such container" in str(error.explanation):
            return "gone"
        raise


def state(host: Engine, container_id: str) -> str:
    """`state_or_gone` on a test host."""
    return state_or_gone(host.client(), container_id)
