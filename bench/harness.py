"""What every case stands on: private hosts, planted containers, timed commands, statistics.

Everything here acts only on daemons the bench started itself, so it may remove every
container it sees.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors

from janitor.children import json_lines
from sandbox.daemons import PrivateDaemon
from sandbox.image import IMAGE, ensure_test_image

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JANITOR = str(BIN / "janitor")
CELERY = str(BIN / "celery")
# The bench's containers carry this label; the janitor's selector and prune's filter use it.
LABEL_KEY = "janitor-bench"
MANAGED = {LABEL_KEY: "managed"}
SELECTOR = f"{LABEL_KEY}=managed"
SLEEP_FOREVER = ["sleep", "100000"]
# Planting is not what is measured: as many calls in flight as the daemon takes well.
PLANT_THREADS = 8
# Refuses at once: the CLI then sweeps without a lease instead of waiting for a Redis.
NO_REDIS = "redis://127.0.0.1:1/0"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")
R = TypeVar("R")


class BenchError(RuntimeError):
    """A tool did not do what the bench asked; the figures of that run would be wrong."""


class Host:
    """A private dockerd with the test image, and the bench's ways of filling and emptying it."""

    def __init__(self, name: str, *, netns: str | None = None) -> None:
        self.name = name
        self.daemon = PrivateDaemon(name, netns=netns)

    def start(self) -> None:
        self.daemon.start()
        ensure_test_image(self.daemon.api())

    def cleanup(self) -> None:
        self.daemon.cleanup()

    @property
    def url(self) -> str:
        return self.daemon.url

    @property
    def api(self) -> docker.APIClient:
        return self.daemon.api()

    def version(self) -> str:
        return str(self.api.version()["Version"])

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.api.info()
        return info

    def create(
        self,
        count: int,
        *,
        labels: Mapping[str, str] | None = MANAGED,
        command: Sequence[str] = SLEEP_FOREVER,
        name_prefix: str | None = None,
    ) -> list[str]:
        """`count` created, never started containers, made side by side."""
        api = self.api
        host_config = api.create_host_config(network_mode="none")

        def create_one(index: int) -> str:
            created = api.create_container(
                IMAGE,
                command=list(command),
                labels=dict(labels or {}),
                name=None if name_prefix is None else f"{name_prefix}{index}",
                host_config=host_config,
                # dcstop has no stop-timeout option: the container's own StopTimeout is its
                # equivalent of JANITOR_STOP_TIMEOUT=0s, so all tools SIGKILL at once.
                stop_timeout=0,
            )
            return str(created["Id"])

        return _in_pool(create_one, range(count))

    def run(
        self,
        count: int,
        *,
        labels: Mapping[str, str] | None = MANAGED,
        command: Sequence[str] = SLEEP_FOREVER,
        name_prefix: str | None = None,
    ) -> list[str]:
        """`count` started containers."""
        ids = self.create(count, labels=labels, command=command, name_prefix=name_prefix)
        _in_pool(self.api.start, ids)
        return ids

    def exited(self, count: int, *, labels: Mapping[str, str] | None = MANAGED) -> list[str]:
        """`count` containers that ran to completion (FinishedAt set), as a real backlog has."""
        ids = self.run(count, labels=labels, command=["true"])
        _in_pool(lambda container_id: self.api.wait(container_id, timeout=60), ids)
        return ids

    def count(self) -> int:
        return len(self.api.containers(all=True, quiet=True))

    def empty(self) -> None:
        """Remove every container, running or not: all of them are the bench's own."""
        api = self.api

        def remove(container_id: str) -> None:
            try:
                api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                if error.status_code != 409:  # a removal already under way
                    raise

        deadline = time.monotonic() + 120
        while ids := [c["Id"] for c in api.containers(all=True, quiet=True)]:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: {len(ids)} containers would not go")
            _in_pool(remove, ids)

    def cpu_seconds(self) -> float:
        """CPU time so far of this daemon's dockerd and containerd."""
        return process_cpu_seconds(f"{self.daemon.dir}/")


def _in_pool(call: Callable[[T], R], items: Iterable[T]) -> list[R]:
    with ThreadPoolExecutor(PLANT_THREADS, thread_name_prefix="plant") as pool:
        return list(pool.map(call, items))


def process_cpu_seconds(marker: str) -> float:
    """User + system CPU of the long-lived processes whose command line holds `marker` (dockerd
    and containerd), with their waited-for children: a daemon's own cost, not the client's.

    Shims are left out: one exits with its container and takes its CPU time along, which made
    a kill look like negative daemon work.
    """
    needle = marker.encode()
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if needle not in cmdline or b"containerd-shim" in cmdline.split(b"\0", 1)[0]:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # Fields after the command name, from state (stat field 3): utime is field 14.
        total += sum(int(value) for value in fields[11:15])
    return total / _CLOCK_TICKS


@dataclass
class Timed:
    """One command's wall time and the CPU it and the daemons spent meanwhile."""

    wall_s: float
    client_cpu_s: float
    daemon_cpu_s: float
    code: int = 0
    stdout: str = ""
    stderr: str = ""

    def figures(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 4),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "daemon_cpu_s": round(self.daemon_cpu_s, 3),
        }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    hosts: Sequence[Host],
    timeout: float = 600,
) -> Timed:
    """Run a tool to completion as a user would; its CPU is read from its rusage."""
    daemon_before = sum(h.cpu_seconds() for h in hosts)
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    wall = time.perf_counter() - started
    return Timed(
        wall_s=wall,
        client_cpu_s=_children_cpu() - cpu_before,
        daemon_cpu_s=sum(h.cpu_seconds() for h in hosts) - daemon_before,
        code=done.returncode,
        stdout=done.stdout,
        stderr=done.stderr,
    )


def run_in_process(call: Callable[[], object], hosts: Sequence[Host]) -> Timed:
    """Time an SDK loop in this process; its CPU is this process's."""
    daemon_before = sum(h.cpu_seconds() for h in hosts)
    cpu_before = _own_cpu()
    started = time.perf_counter()
    call()
    wall = time.perf_counter() - started
    return Timed(
        wall_s=wall,
        client_cpu_s=_own_cpu() - cpu_before,
        daemon_cpu_s=sum(h.cpu_seconds() for h in hosts) - daemon_before,
    )


def janitor_env(hosts: Sequence[Host], **overrides: str) -> dict[str, str]:
    """The CLI's environment: nothing JANITOR_* leaks in from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    env.update(
        JANITOR_HOSTS=",".join(f"{h.name}={h.url}" for h in hosts),
        JANITOR_REDIS_URL=NO_REDIS,
        JANITOR_SELECTOR=SELECTOR,
        JANITOR_LOG_FORMAT="json",
        JANITOR_LOG_LEVEL="INFO",
    )
    env.update({f"JANITOR_{key.upper()}": value for key, value in overrides.items()})
    return env


@dataclass
class JanitorRun:
    """One `janitor sweep --json` subprocess: timings, reports and its summary log lines."""

    timed: Timed
    reports: list[dict[str, Any]]
    finished: list[dict[str, Any]] = field(default_factory=list)

    def done(self) -> int:
        return sum(int(r["counts"].get("done", 0)) for r in self.reports)

    def duration_s(self) -> float:
        """The slowest host's own report, summed over tasks: hosts are swept side by side."""
        per_host: dict[str, float] = {}
        for report in self.reports:
            per_host[report["host"]] = per_host.get(report["host"], 0.0) + report["duration_s"]
        return max(per_host.values())

    def api_calls(self) -> list[int]:
        return [int(event["api_calls"]) for event in self.finished]


def sweep(task: str, env: Mapping[str, str], hosts: Sequence[Host]) -> JanitorRun:
    timed = run_command([JANITOR, "sweep", "--task", task, "--json"], env, hosts)
    if timed.code != 0:
        raise BenchError(f"janitor sweep exited {timed.code}:\n{timed.stderr[-3000:]}")
    reports: list[dict[str, Any]] = json.loads(timed.stdout)
    for report in reports:
        if report["status"] != "ok":
            raise BenchError(f"janitor sweep reported {report['status']}: {report}")
    finished = json_lines(timed.stderr.splitlines(), "sweep_finished")
    return JanitorRun(timed, reports, finished)


def docker_cli(host: Host, *args: str) -> list[str]:
    return ["docker", "-H", host.url, *args]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: with few samples it is an observed value, never interpolated."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def machine_facts(host: Host) -> dict[str, Any]:
    """The facts a run's figures depend on, the load average at its start included: other
    people's work on a shared machine shows there, and in every timing."""
    info = host.info()
    client = subprocess.run(
        ["docker", "version", "--format", "{{.Client.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "mem_total_gib": round(int(info["MemTotal"]) / 2**30, 1),
        "kernel": platform.release(),
        "dockerd": host.version(),
        "storage_driver": info.get("Driver"),
        "docker_cli": client,
        "python": platform.python_version(),
        "loadavg_start": [round(load, 1) for load in os.getloadavg()],
    }


def write_json(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: an interrupted run never leaves half a JSON file.
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(path)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)
