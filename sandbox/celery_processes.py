"""Real Celery processes: `celery -A janitor worker`, beat and Flower as children of ours, for
the tests and the benchmarks.

Each runs `python -m celery -A janitor ...` from the repository root with the environment it
is given, writes its output (the janitor's JSON log lines) to a file, and is stopped with a
warm shutdown, forced after a timeout, its whole process group (pool children) included.
`Processes` starts them under one directory and stops every one of them on exit.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from janitor.children import Child, log_tail, read_json_log
from janitor.service import LEAN_WORKER
from sandbox.managed import Managed

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT = 20.0
READY_TIMEOUT = 60.0


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "janitor", *args]


def unique_hostname(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@janitor-test"


class CeleryProcess:
    """One `celery` command, started at once, and the file its output goes to."""

    def __init__(
        self,
        role: str,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        hostname: str | None = None,
    ) -> None:
        self.role = role
        self.log_path = log_path
        self.hostname = hostname
        # Set by whoever ended it on purpose, so `check_alive` does not count it as a death.
        self.stopped = False
        self.child = Child(
            f"celery {role} {hostname or ''}".rstrip(),
            celery_command(*args),
            log_path=log_path,
            env=env,
            cwd=ROOT,
        )
        self.child.start()

    def __repr__(self) -> str:
        return f"CeleryProcess({self.role}, pid={self.pid}, {self.hostname or ''})"

    @property
    def pid(self) -> int:
        pid = self.child.pid
        assert pid is not None, "started in __init__"
        return pid

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return read_json_log(self.log_path, event)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def sent_ticks(self, entry: str = "") -> list[dict[str, Any]]:
        """A beat's ticks that it sent (a withheld tick logs no such line), of the entries
        whose name contains `entry`."""
        return [
            e
            for e in self.events()
            if e["event"].startswith("Scheduler: Sending due task") and entry in e["event"]
        ]

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until a worker has connected and said it is ready to take tasks."""
        ready = f"{self.hostname} ready."
        self.child.wait_ready(lambda: self.events(ready), timeout, "ready to take tasks")

    def check_alive(self) -> None:
        """ChildError with the end of its log if the process has exited."""
        self.child.check_alive()

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting for it."""
        self.stopped = True
        self.child.terminate()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Warm shutdown, forced after `timeout`; leftover pool children go too."""
        self.stopped = True
        return self.child.stop(timeout)


def start_worker(
    env: Mapping[str, str],
    *,
    hostname: str,
    log_path: Path,
    queues: Sequence[str] | None = None,
    beat: bool = False,
    schedule_path: Path | None = None,
    pool: str = "prefork",
    concurrency: int | None = None,
) -> CeleryProcess:
    """`celery worker` as shipped (lean: no gossip, no mingle); without `queues` it reads those
    of the hosts in its JANITOR_HOSTS."""
    # No --loglevel: the janitor's logging (JANITOR_LOG_LEVEL) replaces Celery's.
    args = ["worker", "--hostname", hostname, "--pool", pool, *LEAN_WORKER]
    if queues is not None:
        args += ["--queues", ",".join(queues)]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if beat:
        if schedule_path is None:
            raise ValueError("an embedded beat needs a schedule_path")
        args += ["--beat", "--schedule", str(schedule_path)]
    return CeleryProcess("worker", args, env, log_path, hostname=hostname)


def start_beat(env: Mapping[str, str], *, schedule_path: Path, log_path: Path) -> CeleryProcess:
    return CeleryProcess("beat", ["beat", "--schedule", str(schedule_path)], env, log_path)


def start_flower(
    env: Mapping[str, str], *, port: int, log_path: Path, basic_auth: str | None = None
) -> CeleryProcess:
    flower_env = dict(env)
    if basic_auth is not None:
        flower_env["FLOWER_BASIC_AUTH"] = basic_auth
    args = ["flower", "--address=127.0.0.1", f"--port={port}"]
    return CeleryProcess("flower", args, flower_env, log_path)


class Processes(Managed):
    """Starts Celery processes under one directory and stops every one of them on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[CeleryProcess] = []

    def start(self) -> None:
        """Nothing yet: each process starts when it is asked for."""

    def cleanup(self) -> None:
        self.stop_all()

    def worker(
        self, env: Mapping[str, str], label: str = "worker", **options: Any
    ) -> CeleryProcess:
        process = start_worker(
            env,
            hostname=unique_hostname(label),
            log_path=self._log(label),
            **options,
        )
        self.started.append(process)
        return process

    def beat(self, env: Mapping[str, str], label: str = "beat") -> CeleryProcess:
        process = start_beat(
            env, schedule_path=self.directory / f"{label}-schedule", log_path=self._log(label)
        )
        self.started.append(process)
        return process

    def flower(self, env: Mapping[str, str], port: int, basic_auth: str) -> CeleryProcess:
        process = start_flower(env, port=port, log_path=self._log("flower"), basic_auth=basic_auth)
        self.started.append(process)
        return process

    def check_alive(self) -> None:
        """Fail with the end of its log if a process died behind the caller's back."""
        for process in self.started:
            if not process.stopped:
                process.check_alive()

    def stop_all(self) -> None:
        # Beats first, so no tick is sent to a worker that is going away; then all shut
        # down side by side.
        ordered = sorted(self.started, key=lambda p: p.role != "beat")
        for process in ordered:
            process.terminate()
        for process in ordered:
            process.stop()

    def _log(self, label: str) -> Path:
        path = self.directory / f"{label}.log"
        if path.exists():
            path = self.directory / f"{label}-{uuid.uuid4().hex[:6]}.log"
        return path
