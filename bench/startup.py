"""Start-up: the `janitor` command as whole processes, paired run by run with docker-custodian's
`dcgc --help`, the cheapest thing a comparable Python tool does.

The janitor runs from an environment installed as the image installs it (`uv sync --frozen
--no-dev --no-editable` from uv.lock, compiled to bytecode): the development environment
also holds the dev tools' libraries, and structlog imports rich, one of them, when it is
there (about a third of an idle sweep's imports). Two rows run the idle sweep from the
development environment instead, as context.

Every command runs with its bytecode cached, as an installed package has it: a private
PYTHONPYCACHEPREFIX for both tools, filled by one warm-up run that is not counted. One row
runs the idle sweep without bytecode, as a development environment with
PYTHONDONTWRITEBYTECODE=1 and an uncompiled venv does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.custodian import Custodian
from bench.harness import (
    JANITOR,
    REPO_ROOT,
    Host,
    Timed,
    janitor_env,
    median,
    require,
    run_command,
)
from sandbox.redisserver import PrivateRedis

Figures = dict[str, Any]
# Runs per round of the bench (three rounds: a median of nine) for the rows with a target; each
# takes about a second at most, so the suite's one-round smoke run stays near ten seconds on an
# idle machine.
RUNS_PER_ROUND = 3
# The goals: within 2x of `dcgc --help`, and an idle sweep of one host within 0.5 s.
HELP_RATIO_GOAL = 2.0
IDLE_SWEEP_GOAL_S = 0.5


def measure(
    host: Host, tools: Custodian | None, rounds: int, workdir: Path, say: Callable[[str], None]
) -> Figures:
    """Median wall and CPU of each command, and its paired ratio to `dcgc --help`."""
    host.empty()
    cached = workdir / "pycache"
    say("startup: installing the janitor as the image does")
    janitor = _installed(workdir / "installed")
    sweep_argv = [janitor, "sweep", "--host", host.name]
    dev_sweep_argv = [JANITOR, "sweep", "--host", host.name]
    runs = RUNS_PER_ROUND * rounds
    commands: dict[str, Figures] = {}
    with PrivateRedis() as redis_server:
        plain = _with_bytecode(janitor_env([host]), cached)
        with_redis = _with_bytecode(janitor_env([host], redis_url=redis_server.url), cached)
        # name: argv, environment, runs, whether a warm-up run fills the bytecode cache first
        plans: dict[str, tuple[list[str], dict[str, str], int, bool]] = {
            "version": ([janitor, "--version"], plain, runs, True),
            "help": ([janitor, "--help"], plain, runs, True),
            "sweep_help": ([janitor, "sweep", "--help"], plain, runs, True),
            "idle_sweep": (sweep_argv, plain, runs, True),
            # Context, not targets: a run per round.
            "idle_sweep_with_redis": (sweep_argv, with_redis, rounds, True),
            "idle_sweep_dev_env": (dev_sweep_argv, plain, rounds, True),
            "idle_sweep_no_bytecode": (
                dev_sweep_argv,
                _with_bytecode(janitor_env([host]), workdir / "no-pycache", write=False),
                rounds,
                False,
            ),
        }
        anchor = None if tools is None else [tools.dcgc, "--help"]
        anchor_env = _with_bytecode(dict(os.environ), cached)
        for name, (argv, env, count, warm_up) in plans.items():
            paired = "" if anchor is None else ", paired with dcgc --help"
            say(f"startup: {name}, {count} run(s){paired}")
            commands[name] = _paired(
                argv, env, [host], count, warm_up=warm_up, anchor=anchor, anchor_env=anchor_env
            )
    require(host.count() == 0, "an idle sweep left a container behind")
    return {
        "runs": runs,
        "goals": {
            "ratio_to_dcgc_help": HELP_RATIO_GOAL,
            "idle_sweep_wall_s": IDLE_SWEEP_GOAL_S,
        },
        "commands": commands,
    }


def _installed(environment: Path) -> str:
    """The janitor installed into `environment` from uv.lock as the Dockerfile installs it
    (no dev tools, not editable, compiled); from uv's cache, which the development
    environment's own install filled."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    env["UV_PROJECT_ENVIRONMENT"] = str(environment)
    done = subprocess.run(
        ["uv", "sync", "--frozen", "--no-dev", "--no-editable", "--compile-bytecode", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    require(done.returncode == 0, f"uv sync into {environment} failed:\n{done.stderr[-2000:]}")
    return str(environment / "bin" / "janitor")


def _paired(
    argv: Sequence[str],
    env: Mapping[str, str],
    hosts: Sequence[Host],
    count: int,
    *,
    warm_up: bool,
    anchor: Sequence[str] | None,
    anchor_env: Mapping[str, str],
) -> Figures:
    """A B A B ...: each ratio compares runs made side by side, so a drift of the machine's
    speed during the case moves both of a pair."""
    if warm_up:
        _checked(run_command(argv, env, hosts), argv)
        if anchor is not None:
            _checked(run_command(anchor, anchor_env, []), anchor)
    mine: list[Figures] = []
    theirs: list[Figures] = []
    for _ in range(count):
        mine.append(_checked(run_command(argv, env, hosts), argv).figures())
        if anchor is not None:
            theirs.append(_checked(run_command(anchor, anchor_env, []), anchor).figures())
    figures: Figures = {
        "argv": [Path(argv[0]).name, *argv[1:]],
        "runs": mine,
        "median": _median(mine),
    }
    if theirs:
        ratios = [m["wall_s"] / t["wall_s"] for m, t in zip(mine, theirs, strict=True)]
        figures["dcgc_help"] = {"runs": theirs, "median": _median(theirs)}
        figures["ratio_to_dcgc_help"] = round(median(ratios), 3)
    return figures


def _checked(timed: Timed, argv: Sequence[str]) -> Timed:
    require(timed.code == 0, f"{' '.join(argv)} exited {timed.code}:\n{timed.stderr[-2000:]}")
    return timed


def _median(runs: Sequence[Figures]) -> Figures:
    return {key: round(median(run[key] for run in runs), 4) for key in ("wall_s", "client_cpu_s")}


def _with_bytecode(env: dict[str, str], prefix: Path, *, write: bool = True) -> dict[str, str]:
    """`env` with Python's bytecode cache under `prefix` (an empty one, never written, when
    not `write`): neither tool's own __pycache__ nor a shell's PYTHONDONTWRITEBYTECODE decides."""
    prefix.mkdir(parents=True, exist_ok=True)
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    if write:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env
