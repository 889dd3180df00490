"""A steady workload for the soak test, and the instruments that watch it.

`Churn` spawns containers on one host at a fixed rate, a mix like a CI host's: short jobs that
exit by themselves, ghosts that never end (some with a restart policy), containers created and
never started, jobs that remove themselves (`--rm`), and tidy ones their owner stops and removes
before any budget. `EventLog` follows the daemon's event stream, so every instant (start, die,
destroy) is on the daemon's clock. `MemorySampler` sums the resident memory of a process session.
"""

from __future__ import annotations

import contextlib
import heapq
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions

from support.containers import SLEEP_FOREVER, TERM_AWARE, create_only, run_running

MANAGED = {"janitor.managed": "true"}
# kind -> weight. Only the first four are the janitor's to handle.
KINDS = {
    "job": 55,
    "ghost": 15,
    "ghost-always": 5,
    "created": 5,
    "tidy": 12,
    "auto-remove": 8,
}
JUDGED_KINDS = frozenset({"job", "ghost", "ghost-always", "created"})


@dataclass(frozen=True)
class Spawned:
    id: str
    kind: str
    host: str
    labels: Mapping[str, str]


class Churn:
    """Spawns containers on one host at `rate` per second until stopped; tidies its own."""

    def __init__(self, host_name: str, url: str, rate: float, seed: int) -> None:
        self.host_name = host_name
        self.url = url
        self.rate = rate
        self.rng = random.Random(seed)
        self.spawned: list[Spawned] = []
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._tidy: list[tuple[float, str]] = []
        self._tidy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0
        self.stopped_at = 0.0

    def start(self) -> None:
        self.started_at = time.monotonic()
        for target in (self._spawn_loop, self._tidy_loop):
            thread = threading.Thread(target=target, name=f"churn-{self.host_name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)
        self.stopped_at = time.monotonic()

    @property
    def achieved_rate(self) -> float:
        elapsed = (self.stopped_at or time.monotonic()) - self.started_at
        return len(self.spawned) / elapsed if elapsed > 0 else 0.0

    def _spawn_loop(self) -> None:
        names, weights = list(KINDS), list(KINDS.values())
        client = docker.DockerClient(base_url=self.url, timeout=60)
        try:
            due = time.monotonic()
            while not self._stop.is_set():
                due += 1 / self.rate
                # Behind schedule (a slow daemon), spawn at once rather than in a burst later.
                due = max(due, time.monotonic())
                self._stop.wait(max(0.0, due - time.monotonic()))
                if self._stop.is_set():
                    break
                kind = self.rng.choices(names, weights)[0]
                try:
                    self.spawned.append(self._spawn(client, kind))
                except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                    self.errors[f"spawn {kind}: {type(exc).__name__}"] += 1
        finally:
            client.close()

    def _spawn(self, client: docker.DockerClient, kind: str) -> Spawned:
        rng = self.rng
        labels = dict(MANAGED)
        if kind == "job":
            if rng.random() < 0.2:
                labels["janitor.stopped-grace"] = "5s"
            command = ("sh", "-c", f"sleep {rng.choice([0, 1, 2, 3])}")
            container_id = run_running(client, labels=labels, command=command)
        elif kind == "ghost":
            labels |= rng.choice(
                [{}, {"janitor.max-runtime": "8s"}, {"janitor.max-runtime": "30s"}]
            )
            container_id = run_running(client, labels=labels, command=SLEEP_FOREVER)
        elif kind == "ghost-always":
            labels["janitor.max-runtime"] = "10s"
            container_id = run_running(
                client, labels=labels, command=SLEEP_FOREVER, restart_policy={"Name": "always"}
            )
        elif kind == "created":
            container_id = create_only(client, labels=labels)
        elif kind == "tidy":
            container_id = run_running(client, labels=labels, command=TERM_AWARE)
            with self._tidy_lock:
                heapq.heappush(self._tidy, (time.monotonic() + rng.uniform(2, 8), container_id))
        elif kind == "auto-remove":
            command = ("sh", "-c", "sleep 1")
            container_id = run_running(client, labels=labels, command=command, auto_remove=True)
        else:
            raise ValueError(kind)
        return Spawned(container_id, kind, self.host_name, labels)

    def _tidy_loop(self) -> None:
        """The owner of the tidy containers: stops and removes each well within its budget."""
        api = docker.APIClient(base_url=self.url, timeout=60)
        try:
            while not self._stop.is_set() or self._tidy:
                with self._tidy_lock:
                    ready = self._tidy and self._tidy[0][0] <= time.monotonic()
                    container_id = heapq.heappop(self._tidy)[1] if ready else None
                if container_id is None:
                    time.sleep(0.1)
                    continue
                try:
                    api.stop(container_id, timeout=5)
                    api.remove_container(container_id)
                except (docker.errors.APIError, requests.exceptions.RequestException) as exc:
                    self.errors[f"tidy: {type(exc).__name__}"] += 1
        finally:
            api.close()


@dataclass
class Lifecycle:
    """One container's life on the daemon's clock (seconds since the epoch)."""

    created: float | None = None
    starts: list[float] = field(default_factory=list)
    dies: list[float] = field(default_factory=list)
    destroyed: float | None = None


class EventLog:
    """Every container event of one daemon, from the moment it is started."""

    def __init__(self, url: str) -> None:
        self._api = docker.APIClient(base_url=url, timeout=60)
        self.lives: dict[str, Lifecycle] = {}
        self.count = 0
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self.error: str | None = None

    def start(self) -> None:
        self._stream = self._api.events(decode=True, filters={"type": "container"})
        self._thread = threading.Thread(target=self._follow, name="events", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                self._record(event)
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            OSError,
            AttributeError,  # the response closed under the reader
        ) as exc:
            if not self._closing:
                self.error = repr(exc)

    def _record(self, event: Mapping[str, Any]) -> None:
        self.count += 1
        life = self.lives.setdefault(str(event.get("id", "")), Lifecycle())
        at = int(event["timeNano"]) / 1e9
        action = event.get("Action") or event.get("status")
        if action == "create":
            life.created = at
        elif action == "start":
            life.starts.append(at)
        elif action == "die":
            life.dies.append(at)
        elif action == "destroy":
            life.destroyed = at

    def close(self) -> None:
        self._closing = True
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
        if self._thread is not None:
            self._thread.join(10)
        self._api.close()


def session_members(sid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            yield int(entry.name)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class MemorySample:
    at: float  # time.monotonic()
    session_mib: float
    leader_mib: float
    processes: int


class MemorySampler:
    """The resident memory of a process session (a worker and its pool), every `period`."""

    def __init__(self, sid: int, period: float) -> None:
        self.sid = sid
        self.period = period
        self.samples: list[MemorySample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            members = list(session_members(self.sid))
            total = sum(rss_kib(pid) for pid in members)
            self.samples.append(
                MemorySample(time.monotonic(), total / 1024, rss_kib(self.sid) / 1024, len(members))
            )
            self._stop.wait(self.period)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 3600
