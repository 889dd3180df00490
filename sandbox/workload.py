"""A spiky synthetic workload of labelled containers on a sandbox daemon, for the demo."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum

import docker
import requests

from sandbox.image import IMAGE

MANAGED = {"janitor.managed": "true"}
PROTECTED = {**MANAGED, "janitor.protect": "true"}
# PID 1 without a SIGTERM handler ignores it: a ghost the janitor must escalate to SIGKILL.
SLEEP_FOREVER = ("sleep", "100000")
# Mostly clean exits, some failures, one "killed": the janitor removes them all alike.
EXIT_CODES = (0, 0, 0, 0, 1, 2, 137)
# The daemon starts about 10 busybox containers a second on a small machine; a few threads
# make a burst land as a spike without queueing every start behind the previous one.
BURST_THREADS = 4
# A start that takes longer than this is a daemon in trouble, not a busy one.
CLIENT_TIMEOUT = 30
# What the workload swallows and counts: a busy or shutting-down daemon, not a bug here.
PLANT_ERRORS = (docker.errors.APIError, requests.exceptions.RequestException)


class Kind(StrEnum):
    BURST = "burst"  # runs for a moment and exits: removed after the stopped grace
    GHOST = "ghost"  # would run forever: killed once past the runtime budget
    PROTECTED = "protected"  # janitor.protect=true: must survive, running or exited
    CREATED = "created"  # created, never started: removed after the created grace
    UNMANAGED = "unmanaged"  # no janitor.managed label: out of scope, must survive


@dataclass(frozen=True, slots=True)
class Planted:
    id: str
    name: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Shape:
    """How the workload behaves; the defaults make a demo that is busy but not overwhelming."""

    ghosts: int = 3
    protected_running: int = 2
    protected_exited: int = 1
    created: int = 2
    unmanaged: int = 1
    burst_sizes: tuple[int, int] = (5, 20)
    burst_gaps_s: tuple[float, float] = (2.0, 5.0)
    burst_runtimes_s: tuple[float, float] = (0.2, 2.0)


class Workload:
    """Plants the fixed cast at once, then bursts of short-lived containers until stopped.

    The bursts run in a thread of their own, with the workload's own client; `planted()` and
    `errors` may be read from any thread meanwhile.
    """

    def __init__(self, url: str, *, shape: Shape | None = None, seed: int | None = None) -> None:
        self.shape = shape or Shape()
        self.errors = 0
        self.last_error = ""
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._planted: list[Planted] = []
        self._serial = 0
        self._thread: threading.Thread | None = None
        # Enough connections for every burst thread, so none waits on the pool.
        self._client = docker.APIClient(
            base_url=url, timeout=CLIENT_TIMEOUT, max_pool_size=BURST_THREADS + 2
        )

    def planted(self) -> list[Planted]:
        with self._lock:
            return list(self._planted)

    def start(self) -> None:
        """Plant the fixed cast now, then start the bursts in a thread of their own."""
        self._plant_cast()
        self._thread = threading.Thread(target=self._bursts, name="workload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the burst in flight; containers already planted stay where they are."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._client.close()

    def _bursts(self) -> None:
        shape = self.shape
        with ThreadPoolExecutor(BURST_THREADS, thread_name_prefix="plant") as pool:
            while not self._stop.is_set():
                size = self._rng.randint(*shape.burst_sizes)
                runtimes = [self._rng.uniform(*shape.burst_runtimes_s) for _ in range(size)]
                codes = [self._rng.choice(EXIT_CODES) for _ in range(size)]
                list(pool.map(self._plant_burst, runtimes, codes))
                self._stop.wait(self._rng.uniform(*shape.burst_gaps_s))

    def _plant_cast(self) -> None:
        shape = self.shape
        for _ in range(shape.unmanaged):
            self._plant(Kind.UNMANAGED, {}, SLEEP_FOREVER, start=True)
        for _ in range(shape.protected_running):
            self._plant(Kind.PROTECTED, PROTECTED, SLEEP_FOREVER, start=True)
        for _ in range(shape.protected_exited):
            self._plant(Kind.PROTECTED, PROTECTED, ("true",), start=True)
        for _ in range(shape.ghosts):
            self._plant(Kind.GHOST, MANAGED, SLEEP_FOREVER, start=True)
        for _ in range(shape.created):
            self._plant(Kind.CREATED, MANAGED, SLEEP_FOREVER, start=False)

    def _plant_burst(self, runtime_s: float, code: int) -> None:
        command = ("sh", "-c", f"sleep {runtime_s:.1f}; exit {code}")
        self._plant(Kind.BURST, MANAGED, command, start=True)

    def _plant(
        self,
        kind: Kind,
        labels: Mapping[str, str],
        command: Sequence[str],
        *,
        start: bool,
    ) -> None:
        with self._lock:
            self._serial += 1
            name = f"demo-{kind.value}-{self._serial:04d}"
        try:
            created = self._client.create_container(
                IMAGE,
                command=list(command),
                labels=dict(labels),
                name=name,
                host_config=self._client.create_host_config(network_mode="none"),
            )
            container_id = str(created["Id"])
            # Recorded before the start: a container whose start failed is still there to judge.
            with self._lock:
                self._planted.append(Planted(container_id, name, kind))
            if start:
                self._client.start(container_id)
        except PLANT_ERRORS as exc:
            with self._lock:
                self.errors += 1
                self.last_error = f"{name}: {exc}"
