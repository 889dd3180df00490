"""What the host goes through, sampled in a thread of its own: the machine's CPU and memory
share (/proc), the cleaner's own CPU, and, from a full list call every few seconds, the
stopped backlog and how long that list call took."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from bench.replay.replayer import Replayer
from sandbox.procfs import descendants

STOPPED_STATES = frozenset({"exited", "created", "dead"})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class HostSample:
    at_s: float
    cpu: float
    memory: float
    cleaner_cpu_s: float


@dataclass
class ListSample:
    """One full list call: its latency and what it showed. `spike_left` counts, per spike, its
    short-lived containers still on the host (running or stopped)."""

    at_s: float
    latency_s: float
    stopped: int
    running: int
    spike_left: dict[int, int] = field(default_factory=dict)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot; iowait counts as idle."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def memory_share() -> float:
    """Share of memory in use: what MemAvailable says cannot be had."""
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, rest = line.split(":", 1)
        values[name] = int(rest.split()[0])
    return 1 - values["MemAvailable"] / values["MemTotal"]


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process tree so far: every live member's own time and that of its reaped
    children (a finished pool child's time lands in its parent's cutime, counted once)."""
    ticks = 0
    for pid in {root} | descendants([root]):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / CLOCK_TICKS


class Sampler:
    """Samples until stopped; times are seconds since `t0` (time.time())."""

    def __init__(
        self,
        url: str,
        replayer: Replayer,
        cleaner_cpu: Callable[[], float],
        *,
        every_s: float = 1.0,
        list_every_s: float = 2.0,
    ) -> None:
        self._api = docker.APIClient(base_url=url, timeout=60)
        self._replayer = replayer
        self._cleaner_cpu = cleaner_cpu
        self._every_s = every_s
        self._list_every_s = list_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0
        self.host: list[HostSample] = []
        self.lists: list[ListSample] = []

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._api.close()

    def list_now(self) -> ListSample:
        started = time.perf_counter()
        at = time.time() - self.t0
        containers = self._api.containers(all=True)
        latency = time.perf_counter() - started
        stopped = running = 0
        left: dict[int, int] = {}
        for container in containers:
            if container["State"] in STOPPED_STATES:
                stopped += 1
            elif container["State"] == "running":
                running += 1
            planned = self._replayer.planned_for(container["Id"])
            if planned is not None and planned.spike is not None and not planned.is_ghost:
                left[planned.spike] = left.get(planned.spike, 0) + 1
        return ListSample(round(at, 3), latency, stopped, running, left)

    def _run(self) -> None:
        busy, total = _cpu_times()
        next_list = 0.0
        while not self._stop.wait(self._every_s):
            now_busy, now_total = _cpu_times()
            share = (now_busy - busy) / (now_total - total) if now_total > total else 0.0
            busy, total = now_busy, now_total
            at = time.time() - self.t0
            self.host.append(HostSample(round(at, 3), share, memory_share(), self._cleaner_cpu()))
            if at >= next_list:
                self.lists.append(self.list_now())
                next_list = at + self._list_every_s
