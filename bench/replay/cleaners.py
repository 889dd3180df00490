"""The four ways a host is kept clean (or not) while the day is replayed: nobody; what
operators run instead (`docker container prune -f` and dcstop from a cron-like loop); the
janitor service (worker with embedded beat) with pacing off; and with pacing on.

Each is started before the day, stopped after it, and says what it cost (CPU seconds of its
own processes), when it swept and how many containers it reports having removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from bench.custodian import Custodian
from bench.harness import BenchError, Host, docker_cli
from bench.replay.replayer import NAME_PREFIX
from bench.replay.sampler import tree_cpu_seconds
from bench.service import Service, epoch

# A removed container's id on a line of its own in `docker container prune`'s output.
PRUNED_ID = re.compile(r"^[0-9a-f]{64}$", re.MULTILINE)
CRON_TIMEOUT = 300
# Pacing's threshold in the pacing-on variant: a spike of the day starts 200-300 a minute,
# the quiet trickle a few; 60 a minute sits far from both.
SPIKE_RATE = 60


@dataclass(frozen=True)
class Timing:
    """The cleaners' clock for a compressed day: cron period, beat intervals, budgets."""

    cron_every: timedelta
    kill_interval: timedelta
    remove_interval: timedelta
    max_runtime: timedelta
    stopped_grace: timedelta
    docker_timeout: timedelta

    @classmethod
    def full(cls) -> Timing:
        return cls(
            cron_every=timedelta(minutes=1),
            kill_interval=timedelta(seconds=30),
            remove_interval=timedelta(minutes=1),
            max_runtime=timedelta(minutes=1),
            stopped_grace=timedelta(seconds=2),
            docker_timeout=timedelta(seconds=10),
        )

    @classmethod
    def quick(cls) -> Timing:
        return cls(
            cron_every=timedelta(seconds=10),
            kill_interval=timedelta(seconds=5),
            remove_interval=timedelta(seconds=10),
            max_runtime=timedelta(seconds=10),
            stopped_grace=timedelta(seconds=2),
            docker_timeout=timedelta(seconds=3),
        )


def seconds(duration: timedelta) -> str:
    return f"{int(duration.total_seconds())}s"


@dataclass
class Sweep:
    """One cleaning run, seconds since the day began."""

    at_s: float
    task: str
    duration_s: float
    removed: int = 0
    status: str = "ok"


class Cleaner(Protocol):
    name: str
    settings: dict[str, str]

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def check_alive(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def sweeps(self, t0: float) -> list[Sweep]: ...

    def deferrals(self, t0: float) -> list[float]: ...


@dataclass
class NoCleanup:
    name: str = "none"
    settings: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        """Nobody cleans: the anchor every ratio is taken against."""

    def stop(self) -> None:
        """Nothing runs."""

    def check_alive(self) -> None:
        """Nothing can die."""

    def cpu_seconds(self) -> float:
        return 0.0

    def sweeps(self, t0: float) -> list[Sweep]:
        return []

    def deferrals(self, t0: float) -> list[float]:
        return []


class Cron:
    """`docker container prune -f`, then dcstop (when installed), every `cron_every`, as a
    crontab line would run them; a run that overruns delays the next, as flock'd cron does."""

    name = "cron"

    def __init__(self, host: Host, custodian: Custodian | None, timing: Timing) -> None:
        self._host = host
        self._custodian = custodian
        self._timing = timing
        self.settings = {
            "every": seconds(timing.cron_every),
            "prune": "docker container prune -f",
            "dcstop": (
                f"dcstop --max-run-time {seconds(timing.max_runtime)} --prefix {NAME_PREFIX}"
                if custodian is not None
                else "not installed (--no-custodian)"
            ),
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runs: list[tuple[float, str, float, int]] = []
        self._cpu = 0.0
        self._lock = threading.Lock()
        self._failure: BenchError | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="cron", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def check_alive(self) -> None:
        if self._failure is not None:
            raise self._failure

    def cpu_seconds(self) -> float:
        with self._lock:
            return self._cpu

    def sweeps(self, t0: float) -> list[Sweep]:
        with self._lock:
            return [
                Sweep(round(at - t0, 3), task, took, removed)
                for at, task, took, removed in self._runs
            ]

    def deferrals(self, t0: float) -> list[float]:
        return []

    def _loop(self) -> None:
        every = self._timing.cron_every.total_seconds()
        env = {**os.environ, "DOCKER_HOST": self._host.url}
        commands = [("prune", docker_cli(self._host, "container", "prune", "-f"))]
        if self._custodian is not None:
            commands.append(
                (
                    "dcstop",
                    [
                        self._custodian.dcstop,
                        "--max-run-time",
                        seconds(self._timing.max_runtime),
                        "--prefix",
                        NAME_PREFIX,
                    ],
                )
            )
        next_run = time.time() + every
        while not self._stop.wait(max(0.0, next_run - time.time())):
            next_run += every
            try:
                for task, argv in commands:
                    self._run(task, argv, env)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                # The main thread notices at its next check and ends the variant.
                self._failure = BenchError(f"the cron loop stopped: {exc}")
                return

    def _run(self, task: str, argv: list[str], env: dict[str, str]) -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.time()
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=CRON_TIMEOUT, check=False
        )
        took = time.time() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise BenchError(f"{task} exited {done.returncode}: {done.stderr[-2000:]}")
        removed = len(PRUNED_ID.findall(done.stdout)) if task == "prune" else 0
        with self._lock:
            self._cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            self._runs.append((began, task, round(took, 3), removed))


class Janitor:
    """The janitor as deployed: a real worker with embedded beat over a private Redis,
    configured only through JANITOR_* variables."""

    def __init__(
        self,
        name: str,
        host: Host,
        redis_url: str,
        directory: Path,
        timing: Timing,
        *,
        spike_rate: int,
    ) -> None:
        self.name = name
        self.settings = {
            "kill_interval": seconds(timing.kill_interval),
            "remove_interval": seconds(timing.remove_interval),
            "max_runtime": seconds(timing.max_runtime),
            "stopped_grace": seconds(timing.stopped_grace),
            "docker_timeout": seconds(timing.docker_timeout),
            "stop_timeout": "0s",
            "max_actions": "100000",
            "spike_rate": str(spike_rate),
        }
        self._service = Service(host, redis_url, self.settings, directory, name)
        self._cpu_at_stop: float | None = None

    def start(self) -> None:
        self._service.start()

    def stop(self) -> None:
        with contextlib.suppress(BenchError):  # never started: nothing ran, nothing to count
            self._cpu_at_stop = tree_cpu_seconds(self._service.pid)
        self._service.cleanup()

    def check_alive(self) -> None:
        self._service.check_alive()

    def cpu_seconds(self) -> float:
        if self._cpu_at_stop is not None:
            return self._cpu_at_stop
        return tree_cpu_seconds(self._service.pid)

    def sweeps(self, t0: float) -> list[Sweep]:
        found = []
        for event in self._service.events("sweep_finished"):
            finished = epoch(event) - t0
            if finished < 0:
                continue  # the service's warm-up tick, on the empty daemon before the day
            took = float(event.get("duration_s", 0.0))
            counts: dict[str, Any] = event.get("counts") or {}
            task = str(event.get("task", "?"))
            removed = int(counts.get("done", 0)) if task == "remove-stopped" else 0
            found.append(
                Sweep(round(finished - took, 3), task, took, removed, str(event.get("status")))
            )
        return found

    def deferrals(self, t0: float) -> list[float]:
        return [round(epoch(e) - t0, 3) for e in self._service.events("sweep_deferred")]
