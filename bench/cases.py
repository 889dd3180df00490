"""The benchmark cases: each plants its containers, runs the janitor and its anchors, and
returns raw figures. Ratios and verdicts are `targets`' business, not theirs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from bench import holders as bench_holders
from bench import prune, worker
from bench import startup as bench_startup
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
from bench.service import Service, epoch, wait_for_count
from sandbox.image import IMAGE
from sandbox.redisserver import PrivateRedis

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
    # Containers of the holders case, in a tenth as many projects.
    holders: int = 200
    unused: int = 500

    @classmethod
    def quick(cls, hosts: int) -> Scale:
        return cls(300, 50, 50, 1000, 60, 300, hosts, 200, 1000, 60, 100)

    @classmethod
    def uniform(cls, size: int, hosts: int) -> Scale:
        return cls(size, size, size, size, size, size, hosts, size, size, size, size)


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


@dataclass(frozen=True)
class SpikeRow:
    """Who faces the spike's backlog in one row: nobody, a `janitor sweep` started beside the
    spike, or the service (worker and beat); `settings` are JANITOR_* overrides."""

    by: Literal["nobody", "cli", "service"]
    settings: Mapping[str, str] = field(default_factory=dict)


# Pacing's threshold in its row: a spike here starts hundreds of containers a minute, a host
# between spikes none; 60 sits far from both.
SPIKE_RATE = 60
MAX_DEFER = "10m"
SPIKE_ROWS: dict[str, SpikeRow] = {
    "no_janitor": SpikeRow("nobody"),
    "janitor_c8": SpikeRow("cli", {"concurrency": "8"}),
    "janitor_c1": SpikeRow("cli", {"concurrency": "1"}),
    "service_pacing_off": SpikeRow("service", {"spike_rate": "0"}),
    "service_pacing_on": SpikeRow(
        "service", {"spike_rate": str(SPIKE_RATE), "max_defer": MAX_DEFER}
    ),
}
SERVICE_SETTINGS = {
    "created_grace": "1s",
    "stopped_grace": "1s",
    "max_actions": NO_CAP,
    "concurrency": "8",
    # Beat's own stopped tick never comes within a round: with a short interval it would
    # remove the backlog while it is planted, before the spike. The bench sends that one tick
    # itself, at the same point of the spike in both service rows (`tick_after`).
    "remove_interval": "5m",
    "kill_interval": "1m",
    "docker_timeout": "10s",
    # This machine's /proc, busy with other people's work, must not start extra sweeps.
    "pressure_high": "0",
}
# The stopped tick reaches the service once a fifth of the spike's containers have started,
# and at least twice as many as pacing needs to tell a spike (more than SPIKE_RATE / 6 starts
# in its 10 s minimum span, counted from the daemon's events in whole seconds): late enough
# that pacing can see the spike in both rows, early enough that most of the spike is left for
# a sweep to compete with. Starts that began from the tick on are what the rows compare.
SPIKE_TICK_AT = 0.2
SPIKE_TICK_MIN = 2 * SPIKE_RATE // 6
# A deferral ends by MAX_DEFER at the latest, and the forced sweep (one action in flight) of a
# backlog this size is done in well under two minutes.
CLEAR_TIMEOUT_S = 600 + 120
LOG_TIMEOUT_S = 30.0


@dataclass
class _SpikeRound:
    """One row's spike in one round: (began, seconds) per start, on time.perf_counter()."""

    samples: list[tuple[float, float]]
    # Named spans of the round, e.g. "during_sweep": the starts that began inside one count.
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    details: Figures = field(default_factory=dict)

    def latencies(self, window: str = "all") -> list[float]:
        """The seconds of the starts that began inside one of the window's spans."""
        spans = self.windows.get(window, [])
        return [
            latency
            for began, latency in self.samples
            if window == "all" or any(start <= began <= end for start, end in spans)
        ]


def spike(ctx: Context) -> Figures:
    """Start latency of a burst of containers over a backlog: alone, with a removal sweep
    running beside it, and with the janitor service running, pacing off and on."""
    rounds: dict[str, list[_SpikeRound]] = {row: [] for row in SPIKE_ROWS}
    service_dir = ctx.workdir / "service"
    try:
        with PrivateRedis() as broker:
            for round_no in range(ctx.rounds):
                for row in _rotated(list(SPIKE_ROWS), round_no):
                    ctx.main.empty()
                    ctx.say(
                        f"spike {ctx.scale.spike} over {ctx.scale.spike_backlog}: {row}, "
                        f"round {round_no + 1}"
                    )
                    spec = SPIKE_ROWS[row]
                    if spec.by == "service":
                        label = f"{row}-{round_no + 1}"
                        done = _service_spike(ctx, spec, broker, service_dir, label)
                    else:
                        done = _cli_spike(ctx, row, spec)
                    rounds[row].append(done)
    finally:
        shutil.rmtree(service_dir, ignore_errors=True)
    ctx.main.empty()
    result: Figures = {
        "count": ctx.scale.spike,
        "backlog": ctx.scale.spike_backlog,
        "tick_after_starts": tick_after(ctx.scale.spike),
        "rows": {},
    }
    for row, done_rounds in rounds.items():
        spec = SPIKE_ROWS[row]
        entry: Figures = {"by": spec.by, "settings": dict(spec.settings)}
        windows = ["all", *dict.fromkeys(name for one in done_rounds for name in one.windows)]
        for window in windows:
            entry[window] = _latency_stats(
                [latency for one in done_rounds for latency in one.latencies(window)]
            )
        # Each round's own p95: how far rounds of the same row drift apart on this machine.
        entry["p95_ms_by_round"] = {
            window: [_latency_stats(one.latencies(window)).get("p95_ms") for one in done_rounds]
            for window in windows
        }
        details = [one.details for one in done_rounds]
        if spec.by == "service":
            entry["service"] = details
            entry["median"] = _summarise(details, _SERVICE_KEYS)
        else:
            entry["sweeps"] = [d for d in details if d]
        result["rows"][row] = entry
    return result


_SERVICE_KEYS = ("tick_s", "spike_s", "cleared_after_spike_s", "deferrals", "forced")


def _cli_spike(ctx: Context, row: str, spec: SpikeRow) -> _SpikeRound:
    host = ctx.main
    backlog = ctx.scale.spike_backlog
    host.create(backlog)
    time.sleep(AGE)
    if spec.by == "nobody":
        # Where the service rows get their tick: the baseline for their starts from the tick
        # on, since a spike's later starts are not timed like its first ones.
        marked: list[float] = []
        mark = tick_after(ctx.scale.spike)
        samples = _spawn(host, ctx.scale.spike, tick_after=mark, tick=_marker(marked))
        return _SpikeRound(samples, {"from_tick": [(marked[0], float("inf"))]})
    env = janitor_env(
        [host], created_grace="1s", stopped_grace="1s", max_actions=NO_CAP, **spec.settings
    )
    janitor = _Background([JANITOR, "sweep", "--task", "remove-stopped", "--json"], env)
    samples = _spawn(host, ctx.scale.spike)
    report = janitor.finish()
    done = int(report["counts"].get("done", 0))
    require(done == backlog, f"{row} removed {done}")
    acting = (janitor.exited_at - report["duration_s"], janitor.exited_at)
    return _SpikeRound(
        samples, {"during_sweep": [acting]}, {"duration_s": report["duration_s"], "done": done}
    )


def _service_spike(
    ctx: Context, spec: SpikeRow, broker: PrivateRedis, directory: Path, label: str
) -> _SpikeRound:
    """The spike with the service in steady state and the backlog eligible: the service gets
    its stopped tick part-way into the spike and handles the backlog its own way."""
    host = ctx.main
    count, backlog = ctx.scale.spike, ctx.scale.spike_backlog
    broker.flush()
    settings = {**SERVICE_SETTINGS, **spec.settings}
    with Service(host, broker.url, settings, directory, label) as service:
        host.create(backlog)
        time.sleep(AGE)
        require(_managed(host) == backlog, f"{label}: the backlog went before the spike")
        # Log lines carry wall-clock times; the spike is timed on perf_counter.
        to_perf = time.perf_counter() - time.time()
        ticked: list[float] = []

        def tick() -> None:
            ticked.append(time.perf_counter())
            service.tick()

        samples = _spawn(host, count, tick_after=tick_after(count), tick=tick)
        spike_start = min(began for began, _ in samples)
        spike_end = max(began + latency for began, latency in samples)
        # Polled only from here on: during the spike the list calls would add to its load.
        cleared_at: float | None = None
        if _managed(host) > 0:
            polled = wait_for_count(service, SELECTOR, 0, CLEAR_TIMEOUT_S)
            cleared_at = polled + to_perf
        sweeps = _removal_sweeps(service, backlog)
        events = service.events()
    spans = [(end + to_perf - duration, end + to_perf) for end, duration, _ in sweeps]
    if cleared_at is None:
        # Gone before the spike ended: the service's own log says when.
        cleared_at = max(end for _, end in spans)
    return _SpikeRound(
        samples,
        {"from_tick": [(ticked[0], float("inf"))], "during_sweep": spans},
        {
            "tick_after_starts": tick_after(count),
            "tick_s": round(ticked[0] - spike_start, 3),
            "spike_s": round(spike_end - spike_start, 3),
            "cleared_after_spike_s": round(cleared_at - spike_end, 3),
            "deferrals": sum(e.get("event") == "sweep_deferred" for e in events),
            "forced": sum(e.get("event") == "sweep_forced" for e in events),
            "sweeps": [
                {
                    "start_s": round(start - spike_start, 3),
                    "duration_s": round(end - start, 3),
                    "done": done,
                }
                for (start, end), (_, _, done) in zip(spans, sweeps, strict=True)
            ],
        },
    )


def _marker(marks: list[float]) -> Callable[[], None]:
    return lambda: marks.append(time.perf_counter())


def tick_after(count: int) -> int:
    """After how many completed starts of a spike of `count` the service gets its tick; never
    past the middle, which only a tiny (smoke) spike reaches."""
    return max(1, min(count // 2, max(round(count * SPIKE_TICK_AT), SPIKE_TICK_MIN)))


def _managed(host: Host) -> int:
    return len(host.api.containers(all=True, quiet=True, filters={"label": SELECTOR}))


def _removal_sweeps(service: Service, backlog: int) -> list[tuple[float, float, int]]:
    """(end, duration_s, done) of each stopped sweep that removed something, once the log
    accounts for the whole backlog: the last removal precedes its sweep's log line."""
    deadline = time.monotonic() + LOG_TIMEOUT_S
    while True:
        sweeps = [
            (epoch(e), float(e["duration_s"]), int(e["counts"].get("done", 0)))
            for e in service.events("sweep_finished")
            if e.get("task") == "remove-stopped"
        ]
        sweeps = [sweep for sweep in sweeps if sweep[2] > 0]
        removed = sum(done for _, _, done in sweeps)
        if removed >= backlog:
            require(removed == backlog, f"the service removed {removed} of {backlog}")
            return sweeps
        service.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"the service's log accounts for {removed} of {backlog} removals:\n"
                f"{service.log_tail()}"
            )
        time.sleep(0.2)


def _latency_stats(latencies: Sequence[float]) -> Figures:
    if not latencies:
        return {"n": 0}
    return {
        "n": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def _spawn(
    host: Host, count: int, *, tick_after: int = 0, tick: Callable[[], None] | None = None
) -> list[tuple[float, float]]:
    """Create and start `count` containers from SPIKE_THREADS threads: (began, seconds) each.
    `tick` is called once, by the thread whose start completes the `tick_after`-th."""
    api = host.api
    host_config = api.create_host_config(network_mode="none")
    lock = threading.Lock()
    completed = 0

    def start_one(_: int) -> tuple[float, float]:
        nonlocal completed
        began = time.perf_counter()
        created = api.create_container(
            IMAGE, command=SPIKE_COMMAND, labels=SPIKE_LABELS, host_config=host_config
        )
        api.start(created["Id"])
        took = time.perf_counter() - began
        if tick is not None:
            with lock:
                completed += 1
                due = completed == tick_after
            if due:
                tick()
        return began, took

    pool = ThreadPoolExecutor(SPIKE_THREADS, thread_name_prefix="spike")
    try:
        return list(pool.map(start_one, range(count)))
    finally:
        # Interrupted (Ctrl-C, SIGTERM): the starts not yet begun are dropped, not waited for.
        pool.shutdown(wait=True, cancel_futures=True)


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


def namespace_holders(ctx: Context) -> Figures:
    """One interface per container against one per project (bench.holders)."""
    count = ctx.scale.holders
    return bench_holders.measure(count, max(1, count // 10), ctx.say)


def unused(ctx: Context) -> Figures:
    """Unused images and volumes against docker's two prune commands (bench.prune)."""
    return prune.measure(ctx.main, ctx.scale.unused, ctx.rounds, ctx.say)


def startup(ctx: Context) -> Figures:
    """The `janitor` command's start-up, whole processes, against `dcgc --help` (bench.startup)."""
    return bench_startup.measure(ctx.main, ctx.custodian, ctx.rounds, ctx.workdir, ctx.say)


CASES: dict[str, Callable[[Context], Figures]] = {
    "backlog": backlog,
    "ghosts": ghosts,
    "idle": idle,
    "spike": spike,
    "hosts": hosts,
    "worker": footprint,
    "holders": namespace_holders,
    "unused": unused,
    "startup": startup,
}
