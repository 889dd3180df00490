"""The benchmark cases: each plants its containers, runs the janitor and its anchors, and
returns raw figures. Ratios and verdicts are `targets`' business, not theirs."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import worker
from bench.custodian import Custodian
from bench.harness import (
    JANITOR,
    LABEL_KEY,
    SELECTOR,
    BenchError,
    Host,
    JanitorRun,
    Timed,
    docker_cli,
    janitor_env,
    median,
    percentile,
    require,
    run_command,
    run_in_process,
    sweep,
)
from janitor.sandbox.image import IMAGE

# Budgets in the bench are 1 s; waiting a little longer makes every planted container eligible
# on the daemon's clock even though the list call rounds creation times down to the second.
AGE = 1.6
# So the blast-radius cap never turns a benchmark sweep into an aborted one.
NO_CAP = "1000000"
SPIKE_THREADS = 8
SPIKE_COMMAND = ["sh", "-c", "sleep 2"]
# Not the janitor's selector: the spike's own containers must stay out of the sweep.
SPIKE_LABELS = {LABEL_KEY: "spike"}
GHOST_PREFIX = "bench-ghost-"
# The spike's rows: None is the spike alone, a mapping is a removal sweep (JANITOR_* overrides)
# running beside it. Concurrency 1 stands in for spike-aware pacing until that exists; the
# pacing feature adds its own row here, with the settings that turn it on.
SPIKE_ROWS: dict[str, dict[str, str] | None] = {
    "no_janitor": None,
    "janitor_c8": {"concurrency": "8"},
    "janitor_c1": {"concurrency": "1"},
}

Figures = dict[str, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Scale:
    """How many containers each case plants; `uniform` makes a smoke run's tiny version."""

    backlog: int = 1000
    exited: int = 200
    ghosts: int = 200
    idle: int = 3000
    spike: int = 200
    spike_backlog: int = 1000
    hosts: int = 4
    per_host: int = 500
    worker_sweep: int = 3000

    @classmethod
    def quick(cls, hosts: int) -> Scale:
        return cls(300, 50, 50, 1000, 60, 300, hosts, 200, 1000)

    @classmethod
    def uniform(cls, size: int, hosts: int) -> Scale:
        return cls(size, size, size, size, size, size, hosts, size, size)


@dataclass
class Context:
    """What a case may use: the hosts (the first is the main one), the rounds, the anchors."""

    hosts: list[Host]
    scale: Scale
    rounds: int
    custodian: Custodian | None
    workdir: Path
    say: Callable[[str], None]

    @property
    def main(self) -> Host:
        return self.hosts[0]


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds > 0 else 0.0


def _rotated(items: Sequence[T], by: int) -> list[T]:
    # Each round starts with another tool, so a slow start of the machine or a neighbour's
    # burst does not always land on the same one.
    shift = by % len(items)
    return [*items[shift:], *items[:shift]]


def _summarise(rounds: list[Figures], keys: Sequence[str]) -> Figures:
    return {key: round(median(r[key] for r in rounds), 4) for key in keys if key in rounds[0]}


def _janitor_figures(run: JanitorRun, count: int) -> Figures:
    return {
        **run.timed.figures(),
        "count": count,
        "per_s": _rate(count, run.timed.wall_s),
        "duration_s": run.duration_s(),
        "per_s_report": _rate(count, run.duration_s()),
        "api_calls": sum(run.api_calls()),
    }


def _tool_figures(timed: Timed, count: int) -> Figures:
    return {**timed.figures(), "count": count, "per_s": _rate(count, timed.wall_s)}


def _check_tool(timed: Timed, what: str) -> None:
    if timed.code != 0:
        raise BenchError(f"{what} exited {timed.code}:\n{timed.stderr[-2000:]}")


# 1. Backlog removal ---------------------------------------------------------------------------


def backlog(ctx: Context) -> Figures:
    """Containers removed per second from a backlog of stopped containers, per tool."""
    host = ctx.main
    kinds = {"created": ctx.scale.backlog, "exited": ctx.scale.exited}
    tools = ["janitor", "prune", "serial_sdk"]
    if ctx.custodian is not None:
        tools.insert(1, "dcgc")
    env = janitor_env(
        [host], created_grace="1s", stopped_grace="1s", max_actions=NO_CAP, concurrency="8"
    )
    figures: Figures = {}
    for kind, count in kinds.items():
        per_tool: dict[str, list[Figures]] = {tool: [] for tool in tools}
        for round_no in range(ctx.rounds):
            for tool in _rotated(tools, round_no):
                host.empty()
                if kind == "created":
                    host.create(count)
                else:
                    host.exited(count)
                time.sleep(AGE)
                ctx.say(f"backlog {kind} {count}: {tool}, round {round_no + 1}")
                result = _remove_backlog(ctx, tool, env, count)
                require(host.count() == 0, f"{tool} left containers behind")
                per_tool[tool].append(result)
        figures[kind] = {
            "count": count,
            "tools": {
                tool: {"rounds": rounds, "median": _summarise(rounds, _MEDIAN_KEYS)}
                for tool, rounds in per_tool.items()
            },
        }
    return figures


_MEDIAN_KEYS = (
    "wall_s", "per_s", "duration_s", "per_s_report", "client_cpu_s", "daemon_cpu_s", "api_calls",
)  # fmt: skip


def _remove_backlog(ctx: Context, tool: str, env: dict[str, str], count: int) -> Figures:
    host = ctx.main
    if tool == "janitor":
        run = sweep("remove-stopped", env, [host])
        require(run.done() == count, f"janitor removed {run.done()} of {count}")
        return _janitor_figures(run, count)
    if tool == "dcgc":
        assert ctx.custodian is not None
        timed = run_command(
            [ctx.custodian.dcgc, "--max-container-age", "1s"], _docker_env(host), [host]
        )
        _check_tool(timed, "dcgc")
        return _tool_figures(timed, count)
    if tool == "prune":
        argv = docker_cli(host, "container", "prune", "--force", "--filter", f"label={SELECTOR}")
        timed = run_command(argv, _docker_env(host), [host])
        _check_tool(timed, "docker container prune")
        return _tool_figures(timed, count)

    def serial_remove() -> None:
        api = host.api
        for container in api.containers(all=True, filters={"label": SELECTOR}):
            api.remove_container(container["Id"], v=True)

    return _tool_figures(run_in_process(serial_remove, [host]), count)


def _docker_env(host: Host) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": host.url}


# 2. Ghost killing -----------------------------------------------------------------------------


def ghosts(ctx: Context) -> Figures:
    """Running containers past their budget stopped per second, per tool."""
    host = ctx.main
    count = ctx.scale.ghosts
    tools = ["janitor", "serial_kill"]
    if ctx.custodian is not None:
        tools.insert(1, "dcstop")
    env = janitor_env([host], max_runtime="1s", stop_timeout="0s", max_actions=NO_CAP)
    per_tool: dict[str, list[Figures]] = {tool: [] for tool in tools}
    for round_no in range(ctx.rounds):
        for tool in _rotated(tools, round_no):
            host.empty()
            host.run(count, name_prefix=GHOST_PREFIX)
            time.sleep(AGE)
            ctx.say(f"ghosts {count}: {tool}, round {round_no + 1}")
            per_tool[tool].append(_kill_ghosts(ctx, tool, env, count))
            still_running = host.api.containers(filters={"label": SELECTOR})
            require(not still_running, f"{tool} left {len(still_running)} running")
    host.empty()
    return {
        "count": count,
        "tools": {
            tool: {"rounds": rounds, "median": _summarise(rounds, _MEDIAN_KEYS)}
            for tool, rounds in per_tool.items()
        },
    }


def _kill_ghosts(ctx: Context, tool: str, env: dict[str, str], count: int) -> Figures:
    host = ctx.main
    if tool == "janitor":
        run = sweep("kill-ghosts", env, [host])
        require(run.done() == count, f"janitor killed {run.done()} of {count}")
        return _janitor_figures(run, count)
    if tool == "dcstop":
        assert ctx.custodian is not None
        argv = [ctx.custodian.dcstop, "--max-run-time", "1s", "--prefix", GHOST_PREFIX]
        timed = run_command(argv, _docker_env(host), [host])
        _check_tool(timed, "dcstop")
        return _tool_figures(timed, count)

    def serial_kill() -> None:
        api = host.api
        for container in api.containers(filters={"label": SELECTOR}):
            api.kill(container["Id"])

    return _tool_figures(run_in_process(serial_kill, [host]), count)


# 3. Idle cost ---------------------------------------------------------------------------------

# Per sweep with no candidate: version, info, list. A little room for a future cheap call;
# what must never appear is a number that grows with the containers on the host.
IDLE_CALLS_MAX = 5


def idle(ctx: Context) -> Figures:
    """What a sweep costs when nothing is eligible, against one raw list call."""
    host = ctx.main
    total = ctx.scale.idle
    first = max(2, total // 10)
    # Default budgets: everything just planted is young, and half is not even managed.
    env = janitor_env([host], max_actions=NO_CAP)
    host.empty()
    _plant_idle(host, first)
    small = sweep("all", env, [host])
    require(small.done() == 0, "an idle sweep acted")
    _plant_idle(host, total - first)
    require(host.count() == total, f"planted {host.count()} of {total}")
    tools = ["janitor", "raw_list"]
    if ctx.custodian is not None:
        tools.append("dcgc_dry_run")
    per_tool: dict[str, list[Figures]] = {tool: [] for tool in tools}
    for round_no in range(ctx.rounds):
        for tool in _rotated(tools, round_no):
            ctx.say(f"idle {total}: {tool}, round {round_no + 1}")
            per_tool[tool].append(_idle_round(ctx, tool, env))
    require(host.count() == total, "something was removed by an idle sweep")
    host.empty()
    calls_small = small.api_calls()
    calls_large = per_tool["janitor"][-1]["api_calls_per_sweep"]
    return {
        "count": total,
        "managed": total // 2,
        "api_calls_per_sweep": {str(first): calls_small, str(total): calls_large},
        "api_calls_constant": calls_small == calls_large,
        "api_calls_max": IDLE_CALLS_MAX,
        "tools": {
            tool: {"rounds": rounds, "median": _summarise(rounds, _IDLE_KEYS)}
            for tool, rounds in per_tool.items()
        },
    }


_IDLE_KEYS = (
    "wall_s", "client_cpu_s", "daemon_cpu_s", "duration_s", "sweep_s_max",
    "kill_ghosts_s", "remove_stopped_s",
)  # fmt: skip


def _plant_idle(host: Host, count: int) -> None:
    host.create(count - count // 2)
    host.create(count // 2, labels=None)


def _idle_round(ctx: Context, tool: str, env: dict[str, str]) -> Figures:
    host = ctx.main
    if tool == "janitor":
        run = sweep("all", env, [host])
        require(run.done() == 0, "an idle sweep acted")
        by_task = {r["task"]: float(r["duration_s"]) for r in run.reports}
        return {
            **run.timed.figures(),
            "duration_s": run.duration_s(),
            "kill_ghosts_s": by_task["kill-ghosts"],
            "remove_stopped_s": by_task["remove-stopped"],
            "sweep_s_max": max(by_task.values()),
            "api_calls_per_sweep": run.api_calls(),
        }
    if tool == "raw_list":
        return run_in_process(lambda: host.api.containers(all=True), [host]).figures()
    assert ctx.custodian is not None
    argv = [ctx.custodian.dcgc, "--max-container-age", "1h", "--dry-run"]
    timed = run_command(argv, _docker_env(host), [host])
    _check_tool(timed, "dcgc --dry-run")
    return timed.figures()


# 4. Spawn spike -------------------------------------------------------------------------------


def spike(ctx: Context) -> Figures:
    """Start latency of a burst of containers, alone and with a removal sweep running."""
    host = ctx.main
    rows = SPIKE_ROWS
    samples: dict[str, list[tuple[float, float]]] = {row: [] for row in rows}
    windows: dict[str, list[tuple[float, float]]] = {row: [] for row in rows}
    sweeps: dict[str, list[Figures]] = {row: [] for row in rows}
    for round_no in range(ctx.rounds):
        for row in _rotated(list(rows), round_no):
            overrides = rows[row]
            host.empty()
            host.create(ctx.scale.spike_backlog)
            time.sleep(AGE)
            ctx.say(f"spike {ctx.scale.spike} over {ctx.scale.spike_backlog}: {row}")
            janitor = None
            if overrides is not None:
                env = janitor_env(
                    [host],
                    created_grace="1s",
                    stopped_grace="1s",
                    max_actions=NO_CAP,
                    **overrides,
                )
                janitor = _Background([JANITOR, "sweep", "--task", "remove-stopped", "--json"], env)
            samples[row] += _spawn(host, ctx.scale.spike)
            if janitor is not None:
                report = janitor.finish()
                done = int(report["counts"].get("done", 0))
                require(done == ctx.scale.spike_backlog, f"{row} removed {done}")
                windows[row].append((janitor.exited_at - report["duration_s"], janitor.exited_at))
                sweeps[row].append({"duration_s": report["duration_s"], "done": done})
    host.empty()
    result: Figures = {"count": ctx.scale.spike, "backlog": ctx.scale.spike_backlog, "rows": {}}
    for row in rows:
        latencies = [latency for _, latency in samples[row]]
        entry: Figures = {"all": _latency_stats(latencies), "sweeps": sweeps[row]}
        if windows[row]:
            during = [
                latency
                for began, latency in samples[row]
                if any(start <= began <= end for start, end in windows[row])
            ]
            entry["during_sweep"] = _latency_stats(during)
        result["rows"][row] = entry
    return result


def _latency_stats(latencies: Sequence[float]) -> Figures:
    if not latencies:
        return {"n": 0}
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def _spawn(host: Host, count: int) -> list[tuple[float, float]]:
    """Create and start `count` containers from SPIKE_THREADS threads: (began, seconds) each."""
    api = host.api
    host_config = api.create_host_config(network_mode="none")

    def start_one(_: int) -> tuple[float, float]:
        began = time.perf_counter()
        created = api.create_container(
            IMAGE, command=SPIKE_COMMAND, labels=SPIKE_LABELS, host_config=host_config
        )
        api.start(created["Id"])
        return began, time.perf_counter() - began

    with ThreadPoolExecutor(SPIKE_THREADS, thread_name_prefix="spike") as pool:
        return list(pool.map(start_one, range(count)))


class _Background:
    """A `janitor sweep --json` running beside the spike; notes when it exits."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.exited_at = 0.0
        self._out = ("", "")
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        self._out = self._proc.communicate()
        self.exited_at = time.perf_counter()

    def finish(self, timeout: float = 600) -> dict[str, Any]:
        self._waiter.join(timeout)
        if self._waiter.is_alive():
            self._proc.kill()
            raise BenchError("the janitor's sweep during the spike did not finish")
        stdout, stderr = self._out
        if self._proc.returncode != 0:
            raise BenchError(f"janitor sweep exited {self._proc.returncode}:\n{stderr[-2000:]}")
        reports: list[dict[str, Any]] = json.loads(stdout)
        return reports[0]


# 5. Several hosts -----------------------------------------------------------------------------


def hosts(ctx: Context) -> Figures:
    """One sweep over K hosts against the same sweep over one of them."""
    count = ctx.scale.per_host
    every = ctx.hosts[: ctx.scale.hosts]
    configs = {"all_hosts": every, "one_host": every[:1]}
    per_config: dict[str, list[Figures]] = {name: [] for name in configs}
    for round_no in range(ctx.rounds):
        for name in _rotated(list(configs), round_no):
            chosen = configs[name]
            with ThreadPoolExecutor(len(every)) as pool:
                list(pool.map(Host.empty, every))
                list(pool.map(lambda h: h.create(count), chosen))
            time.sleep(AGE)
            ctx.say(f"hosts: {name} ({len(chosen)} x {count}), round {round_no + 1}")
            env = janitor_env(chosen, created_grace="1s", stopped_grace="1s", max_actions=NO_CAP)
            # Every daemon's CPU counts, so a busy neighbour daemon would show.
            run = sweep("remove-stopped", env, every)
            require(run.done() == count * len(chosen), f"{name} removed {run.done()}")
            per_config[name].append(
                {**_janitor_figures(run, count * len(chosen)), "hosts": len(chosen)}
            )
    for host in every:
        host.empty()
    return {
        "hosts": len(every),
        "per_host": count,
        "configs": {
            name: {"rounds": rounds, "median": _summarise(rounds, _MEDIAN_KEYS)}
            for name, rounds in per_config.items()
        },
    }


# 6. Worker footprint --------------------------------------------------------------------------


def footprint(ctx: Context) -> Figures:
    """Resident memory of an idle Celery worker and its peak during a large sweep."""
    return worker.measure(ctx.main, ctx.scale.worker_sweep, ctx.workdir, ctx.say)


CASES: dict[str, Callable[[Context], Figures]] = {
    "backlog": backlog,
    "ghosts": ghosts,
    "idle": idle,
    "spike": spike,
    "hosts": hosts,
    "worker": footprint,
}
