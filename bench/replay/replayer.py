"""Replays the day's schedule against one daemon, as the host's users would: each container
created and started at its planned time, each start timed from the run request to running."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import docker
import requests

from bench.harness import MANAGED
from bench.replay.schedule import Planned
from sandbox.image import IMAGE

# Names start so, which is how dcstop (it selects by name prefix) finds the day's ghosts.
NAME_PREFIX = "replay-"
GHOST_COMMAND = ["sleep", "100000"]
# A spike's users are independent: enough starts in flight that one of 300 a minute does not
# queue behind our own pool even when each start takes seconds (the JSON's start lag shows it).
START_THREADS = 32
CLIENT_TIMEOUT = 60
# A failed start is a figure (the daemon was in trouble), not a reason to stop the day.
START_ERRORS = (docker.errors.APIError, requests.exceptions.RequestException)


@dataclass(frozen=True)
class Start:
    """What became of one planned container; times are seconds since the replay began."""

    planned: Planned
    container_id: str
    began_s: float
    latency_s: float
    error: str = ""


class Replayer:
    """Starts the schedule in a thread of its own; `starts()` and `spike_of()` may be read from
    any thread meanwhile."""

    def __init__(self, url: str, schedule: Sequence[Planned], variant: str) -> None:
        self._schedule = list(schedule)
        self._variant = variant
        self._client = docker.APIClient(
            base_url=url, timeout=CLIENT_TIMEOUT, max_pool_size=START_THREADS + 2
        )
        self._lock = threading.Lock()
        self._starts: list[Start] = []
        self._ids: dict[str, Planned] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self, t0: float) -> None:
        self.t0 = t0
        self._thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()
        self._client.close()

    def starts(self) -> list[Start]:
        with self._lock:
            return list(self._starts)

    def planned_for(self, container_id: str) -> Planned | None:
        with self._lock:
            return self._ids.get(container_id)

    def _run(self) -> None:
        with ThreadPoolExecutor(START_THREADS, thread_name_prefix="replay-start") as pool:
            for planned in self._schedule:
                delay = self.t0 + planned.at_s - time.time()
                if delay > 0 and self._stop.wait(delay):
                    break
                if self._stop.is_set():
                    break
                pool.submit(self._start_one, planned)

    def _start_one(self, planned: Planned) -> None:
        api = self._client
        command = (
            GHOST_COMMAND if planned.runtime_s is None else ["sleep", f"{planned.runtime_s:.1f}"]
        )
        began = time.time()
        clock = time.perf_counter()
        container_id = ""
        error = ""
        try:
            created = api.create_container(
                IMAGE,
                command=command,
                labels=MANAGED,
                name=f"{NAME_PREFIX}{self._variant}-{planned.serial:05d}",
                host_config=api.create_host_config(network_mode="none"),
                # As in every bench case: all tools SIGKILL a ghost at once.
                stop_timeout=0,
            )
            container_id = str(created["Id"])
            with self._lock:
                self._ids[container_id] = planned
            api.start(container_id)
        except START_ERRORS as exc:
            error = str(exc)[:200]
        latency = time.perf_counter() - clock
        with self._lock:
            self._starts.append(Start(planned, container_id, began - self.t0, latency, error))
