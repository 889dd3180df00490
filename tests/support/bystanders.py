"""The containers no scenario may touch: protected ones and unmanaged ones, planted old enough
that only their labels keep them (the contract's self-protection, checked everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

import docker
import docker.errors

from support.containers import (
    SLEEP_FOREVER,
    RestartPolicy,
    create_only,
    run_exited,
    run_running,
    state_or_gone,
)

MANAGED = {"janitor.managed": "true"}
# Past any budget a test sets: without the protect label the janitor would act on these.
PROTECTED = {
    **MANAGED,
    "janitor.protect": "true",
    "janitor.max-runtime": "1s",
    "janitor.stopped-grace": "1s",
}
UNMANAGED = {"team": "someone-else"}


def plant_bystanders(
    client: docker.DockerClient,
    *,
    command: Sequence[str] = SLEEP_FOREVER,
    restart_policy: RestartPolicy | None = None,
) -> dict[str, str]:
    """A protected and an unmanaged container in each state; id -> the state it must keep.

    The running ones get `command` and `restart_policy`: a test that restarts the daemon gives
    TERM_AWARE and `always`, so they stop at once and come back running.
    """
    return {
        run_running(
            client, labels=PROTECTED, command=command, restart_policy=restart_policy
        ): "running",
        run_exited(client, labels=PROTECTED): "exited",
        create_only(client, labels=PROTECTED): "created",
        run_running(
            client, labels=UNMANAGED, command=command, restart_policy=restart_policy
        ): "running",
        run_exited(client, labels=UNMANAGED): "exited",
        create_only(client, labels=UNMANAGED): "created",
    }


def disturbed(client: docker.DockerClient, bystanders: dict[str, str]) -> dict[str, str]:
    """The bystanders not in the state they were planted in: id -> state now."""
    now = {c: state_or_gone(client, c) for c in bystanders}
    return {c: s for c, s in now.items() if s != bystanders[c]}
