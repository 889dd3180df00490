"""The unused prune case: labelled unused images and volumes removed by the janitor against
`docker image prune -a` plus `docker volume prune` with the same label filter, in one run."""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker.utils

from bench.harness import (
    MANAGED,
    PLANT_THREADS,
    SELECTOR,
    BenchError,
    Host,
    Timed,
    docker_cli,
    janitor_env,
    median,
    require,
    run_command,
    sweep,
)
from sandbox.redisserver import PrivateRedis

Figures = dict[str, Any]
TOOLS = ("janitor", "prune")
# The janitor's grace in the bench; the planted items wait a little longer before the sweep.
GRACE_S = 1.0


def measure(host: Host, count: int, rounds: int, say: Callable[[str], None]) -> Figures:
    """Unused images and volumes removed per second, the janitor's two sweeps (the one that
    first sees them unused, then the one past the grace) against the two prune commands."""
    per_tool: dict[str, list[Figures]] = {tool: [] for tool in TOOLS}
    with PrivateRedis() as redis_server:
        env = janitor_env(
            [host],
            redis_url=redis_server.url,
            unused_grace=f"{GRACE_S}s",
            max_actions=str(4 * count),
            concurrency="8",
        )
        for round_no in range(rounds):
            order = TOOLS if round_no % 2 == 0 else TOOLS[::-1]
            for tool in order:
                redis_server.flush()
                _plant(host, count)
                say(f"unused {count} images + {count} volumes: {tool}, round {round_no + 1}")
                if tool == "janitor":
                    per_tool[tool].append(_janitor(host, env, count))
                else:
                    time.sleep(GRACE_S + 0.6)  # the same wait the janitor's grace costs it
                    per_tool[tool].append(_prune(host, count))
                require(_planted(host) == (0, 0), f"{tool} left planted images or volumes")
    keys = ("wall_s", "per_s", "first_sweep_s", "duration_s", "client_cpu_s", "daemon_cpu_s")
    return {
        "count": count,
        "tools": {
            tool: {
                "rounds": rounds,
                "median": {
                    key: round(median(r[key] for r in rounds), 4)
                    for key in keys
                    if key in rounds[0]
                },
            }
            for tool, rounds in per_tool.items()
        },
    }


def _janitor(host: Host, env: dict[str, str], count: int) -> Figures:
    first = sweep("prune-unused", env, [host])
    require(first.done() == 0, "the first prune removed something it had not seen unused")
    time.sleep(GRACE_S + 0.6)
    run = sweep("prune-unused", env, [host])
    require(run.done() == 2 * count, f"janitor removed {run.done()} of {2 * count}")
    return {
        **run.timed.figures(),
        "per_s": round(2 * count / run.timed.wall_s, 2),
        "first_sweep_s": round(first.timed.wall_s, 4),
        "duration_s": run.duration_s(),
    }


def _prune(host: Host, count: int) -> Figures:
    label = f"label={SELECTOR}"
    env = dict(os.environ)
    images = run_command(
        docker_cli(host, "image", "prune", "-a", "--force", "--filter", label), env, [host]
    )
    # Docker 23 (API 1.42) made `volume prune` spare named volumes unless told --all; the
    # daemons before it know no such flag and prune them all.
    server_api = host.api.version()["ApiVersion"]
    every_volume = ["--all"] if docker.utils.version_gte(server_api, "1.42") else []
    volumes = run_command(
        docker_cli(host, "volume", "prune", "--force", *every_volume, "--filter", label),
        env,
        [host],
    )
    for timed, what in ((images, "docker image prune"), (volumes, "docker volume prune")):
        if timed.code != 0:
            raise BenchError(f"{what} exited {timed.code}:\n{timed.stderr[-2000:]}")
    both = _sum(images, volumes)
    return {**both, "per_s": round(2 * count / both["wall_s"], 2)}


def _sum(*runs: Timed) -> dict[str, float]:
    figures = [run.figures() for run in runs]
    return {key: round(sum(f[key] for f in figures), 4) for key in figures[0]}


def _plant(host: Host, count: int) -> None:
    """`count` labelled images (each its own one-file import) and `count` labelled volumes."""
    api = host.api

    def image(index: int) -> None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            data = f"bench image {index}\n".encode()
            member = tarfile.TarInfo("payload")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        answer = api.import_image_from_data(
            buffer.getvalue(),
            repository="bench-unused",
            tag=str(index),
            changes=[f"LABEL {SELECTOR}"],
        )
        json.loads(answer.strip().splitlines()[-1])  # the daemon said what it made

    def volume(index: int) -> None:
        api.create_volume(f"bench-unused-{index}", labels=dict(MANAGED))

    with ThreadPoolExecutor(PLANT_THREADS, thread_name_prefix="plant") as pool:
        list(pool.map(image, range(count)))
        list(pool.map(volume, range(count)))


def _planted(host: Host) -> tuple[int, int]:
    api = host.api
    images = api.images(filters={"label": SELECTOR})
    volumes = api.volumes(filters={"label": SELECTOR})["Volumes"] or []
    return len(images), len(volumes)
