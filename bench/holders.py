"""The namespace-holder pattern itself, measured: N containers in P projects on a bridge, one
interface per container against one per project (members join their project's holder with
`--network container:<id>`).

Each layout gets a fresh private dockerd running inside a network namespace the bench makes
for it (`ip netns add`), with its default bridge there: every veth lives in that namespace and
goes with it, never on the machine's own network. Figures per layout: interfaces in that
namespace, resident memory of dockerd, containerd and the shims, create+start latency of the
N containers (from 8 threads), and the janitor's sweeps: an idle one and a kill sweep of every
container past a 1 s budget (where the holders are spared for their running members).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import MANAGED, SELECTOR, Host, JanitorRun, janitor_env, percentile, sweep
from janitor.project import ProjectHolder
from sandbox.image import IMAGE
from sandbox.netns import inside, network_namespace

Figures = dict[str, Any]
THREADS = 8
SLEEP = ["sleep", "100000"]
NO_CAP = "1000000"
_PROGRAMS = ("dockerd", "containerd", "containerd-shim-runc-v2")


def interfaces(netns: str) -> int:
    return len(inside(netns, "ip", "-o", "link", "show").splitlines())


def resident_mib(daemon_dir: Path) -> dict[str, float]:
    """VmRSS of this daemon's dockerd, containerd and shims (summed), by program."""
    marker = f"{daemon_dir}/".encode()
    found = dict.fromkeys(_PROGRAMS, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue  # exited while we looked
        program = Path(argv[0].decode(errors="replace")).name
        if program in found and any(marker in arg for arg in argv):
            rss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
            found[program] += int(rss[0]) / 1024 if rss else 0.0
    return {program: round(mib, 1) for program, mib in found.items()}


def _start_all(host: Host, specs: list[dict[str, Any]]) -> tuple[list[str], list[float]]:
    """Create and start one container per spec from THREADS threads: ids and seconds each."""
    api = host.api

    def start_one(spec: dict[str, Any]) -> tuple[str, float]:
        began = time.perf_counter()
        created = api.create_container(
            IMAGE,
            command=SLEEP,
            labels=spec["labels"],
            host_config=api.create_host_config(**spec["host_config"]),
        )
        api.start(created["Id"])
        return str(created["Id"]), time.perf_counter() - began

    with ThreadPoolExecutor(THREADS, thread_name_prefix="holders") as pool:
        done = list(pool.map(start_one, specs))
    return [i for i, _ in done], [s for _, s in done]


def _latency(seconds: list[float]) -> Figures:
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 1),
        "p95_ms": round(percentile(seconds, 95) * 1000, 1),
    }


def _layout(name: str, containers: int, projects: int, say: Callable[[str], None]) -> Figures:
    with network_namespace() as netns:
        host = Host(f"holders-{name.replace('_', '-')}", netns=netns)
        try:
            host.start()
            before = {"interfaces": interfaces(netns), "memory_mib": resident_mib(host.daemon.dir)}
            figures: Figures = {"before": before}
            members = {"labels": MANAGED, "host_config": {"network_mode": "bridge"}}
            if name == "per_project":
                groups = [ProjectHolder(f"p{i}", labels=MANAGED) for i in range(projects)]
                holder_specs = [
                    {
                        "labels": g.holder_labels,
                        "host_config": {"network_mode": "bridge", "ipc_mode": "shareable"},
                    }
                    for g in groups
                ]
                holder_ids, holder_seconds = _start_all(host, holder_specs)
                figures["holder_start"] = _latency(holder_seconds)
                specs = [
                    {"labels": MANAGED, "host_config": {"network_mode": f"container:{h}"}}
                    for index in range(containers)
                    for h in [holder_ids[index % projects]]
                ]
            else:
                specs = [members] * containers
            say(f"holders: {name}, starting {containers} containers")
            _, seconds = _start_all(host, specs)
            figures["start"] = _latency(seconds)
            figures["interfaces"] = interfaces(netns)
            figures["memory_mib"] = resident_mib(host.daemon.dir)
            idle = sweep("kill-ghosts", janitor_env([host]), [host])
            figures["idle_sweep"] = _sweep_figures(idle)
            time.sleep(1.6)  # past the 1 s budget below, on the daemon's clock
            kill_env = janitor_env([host], max_runtime="1s", stop_timeout="0s", max_actions=NO_CAP)
            figures["kill_sweep"] = _sweep_figures(sweep("kill-ghosts", kill_env, [host]))
            return figures
        finally:
            host.cleanup()


def _sweep_figures(run: JanitorRun) -> Figures:
    (finished,) = run.finished
    return {
        "wall_s": round(run.timed.wall_s, 3),
        "duration_s": run.duration_s(),
        "done": run.done(),
        "held": int(finished.get("held", 0)),
        "api_calls": sum(run.api_calls()),
    }


def measure(containers: int, projects: int, say: Callable[[str], None]) -> Figures:
    """Both layouts, one after the other, each on a daemon of its own."""
    return {
        "containers": containers,
        "projects": projects,
        "selector": SELECTOR,
        "layouts": {
            name: _layout(name, containers, projects, say)
            for name in ("per_container", "per_project")
        },
    }


def render(figures: Figures) -> str:
    """The side-by-side table bench/README.md shows."""
    a, b = (figures["layouts"][n] for n in ("per_container", "per_project"))
    rows = [
        ("interfaces in the namespace", a["interfaces"], b["interfaces"]),
        ("dockerd RSS (MiB)", a["memory_mib"]["dockerd"], b["memory_mib"]["dockerd"]),
        ("containerd RSS (MiB)", a["memory_mib"]["containerd"], b["memory_mib"]["containerd"]),
        ("shims RSS, sum (MiB)", *(x["memory_mib"]["containerd-shim-runc-v2"] for x in (a, b))),
        ("start p50 (ms)", a["start"]["p50_ms"], b["start"]["p50_ms"]),
        ("start p95 (ms)", a["start"]["p95_ms"], b["start"]["p95_ms"]),
        ("idle sweep duration_s", a["idle_sweep"]["duration_s"], b["idle_sweep"]["duration_s"]),
        ("kill sweep duration_s", a["kill_sweep"]["duration_s"], b["kill_sweep"]["duration_s"]),
        (
            "kill sweep done / held",
            *(f"{x['kill_sweep']['done']} / {x['kill_sweep']['held']}" for x in (a, b)),
        ),
        ("kill sweep API calls", a["kill_sweep"]["api_calls"], b["kill_sweep"]["api_calls"]),
    ]
    title = f"\nholders: {figures['containers']} containers in {figures['projects']} projects"
    lines = [title, "| figure | one interface per container | one per project |", "|---|---|---|"]
    lines += [f"| {name} | {left} | {right} |" for name, left, right in rows]
    return "\n".join(lines)
