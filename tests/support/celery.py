"""Real Celery processes for end-to-end tests: worker, beat and Flower as subprocesses.

Each process runs `python -m celery -A janitor ...` in a session of its own with a clean
environment, writes its JSON log lines to a file, and is stopped by the `Processes` context
manager: SIGTERM (a warm shutdown), then SIGKILL to its whole process group, pool children
included. What the processes did is read back from their logs and from the result backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import redis

from support.cli import janitor_env

ROOT = Path(__file__).resolve().parents[2]
# Short enough that a test sees several ticks in seconds, long enough for the nested limits:
# settings refuse an interval whose soft limit (0.8 x) is not above the slowest Docker call.
SERVICE = {
    "kill_interval": "2s",
    "remove_interval": "3s",
    "docker_timeout": "1s",
    "stop_timeout": "0s",
    "log_level": "INFO",
    "log_format": "json",
    # Pressure response reads this machine's /proc, which a busy test machine trips at
    # random: it would start extra stopped sweeps and upset tick counts. Its tests turn it on.
    "pressure_high": "0",
}
STOP_TIMEOUT = 20.0
RESULT_KEYS = "celery-task-meta-*"

T = TypeVar("T")


def service_env(hosts: Mapping[str, str], redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a janitor service: JANITOR_* only from here, fast intervals."""
    env = janitor_env(hosts, redis_url, **{**SERVICE, **overrides})
    # Nothing from the caller's Celery or Flower setup may leak in either.
    for name in [k for k in env if k.startswith(("CELERY_", "FLOWER_"))]:
        del env[name]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def unique_hostname(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@janitor-test"


@dataclass
class CeleryProcess:
    """One running `celery` command and the file its output goes to."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    hostname: str | None = None
    stopped: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return read_events(self.log_path, event)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no output)"
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60) -> None:
        """Until a worker has connected and said it is ready to take tasks."""
        wait_for(
            lambda: any(e["event"] == f"{self.hostname} ready." for e in self.events()),
            timeout=timeout,
            what=f"{self.hostname} to be ready",
            alive=self.check_alive,
            details=self.log_tail,
        )

    def check_alive(self) -> None:
        """Fail with the end of its log if the process has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self} exited with {self.proc.returncode}; end of {self.log_path}:\n"
                f"{self.log_tail()}"
            )

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting for it."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """Warm shutdown, forced after `timeout`; leftover pool children go too."""
        self.terminate()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _killpg(self.proc.pid)
                self.proc.wait()
        # The session leader has exited; children that outlived it keep its group id.
        _killpg(self.proc.pid)
        return self.proc.returncode

    def __repr__(self) -> str:
        return f"CeleryProcess({self.role}, pid={self.pid}, {self.hostname or ''})"


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def celery_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "janitor", *args]


def start(role: str, args: Sequence[str], env: Mapping[str, str], log_path: Path) -> CeleryProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        # A session of its own: a test's Ctrl-C does not reach it, and killpg takes it whole.
        proc = subprocess.Popen(
            celery_command(*args),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return CeleryProcess(role, proc, log_path)


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
    """`celery worker`; without `queues` it reads those of the hosts in its JANITOR_HOSTS."""
    # No --loglevel: the janitor's logging (JANITOR_LOG_LEVEL) replaces Celery's.
    args = ["worker", "--hostname", hostname, "--pool", pool]
    if queues is not None:
        args += ["--queues", ",".join(queues)]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if beat:
        if schedule_path is None:
            raise ValueError("an embedded beat needs a schedule_path")
        args += ["--beat", "--schedule", str(schedule_path)]
    process = start("worker", args, env, log_path)
    process.hostname = hostname
    return process


def start_beat(env: Mapping[str, str], *, schedule_path: Path, log_path: Path) -> CeleryProcess:
    args = ["beat", "--schedule", str(schedule_path)]
    return start("beat", args, env, log_path)


def start_flower(
    env: Mapping[str, str], *, port: int, log_path: Path, basic_auth: str | None = None
) -> CeleryProcess:
    flower_env = dict(env)
    if basic_auth is not None:
        flower_env["FLOWER_BASIC_AUTH"] = basic_auth
    args = ["flower", "--address=127.0.0.1", f"--port={port}"]
    return start("flower", args, flower_env, log_path)


class Processes:
    """Starts Celery processes under one directory and stops every one of them on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[CeleryProcess] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        """Fail with the end of its log if a process died behind the test's back."""
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


def read_events(log_path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a process, in order; banners and a half-written line are skipped."""
    if not log_path.exists():
        return []
    events = []
    with log_path.open(encoding="utf-8", errors="replace") as log:
        for line in log:
            if not line.startswith("{"):
                continue
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and (event is None or parsed.get("event") == event):
                events.append(parsed)
    return events


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, which is returned; fail at the
    deadline with `what` (and `details()`), or as soon as `alive()` raises."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def task_results(redis_url: str) -> list[dict[str, Any]]:
    """Every task result in the Redis result backend (keys celery-task-meta-<id>), as stored."""
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        keys = list(client.scan_iter(match=RESULT_KEYS, count=1000))
        raw = client.mget(keys) if keys else []
    return [json.loads(value) for value in raw if value is not None]


def task_result(redis_url: str, task_id: str) -> dict[str, Any] | None:
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        raw = client.get(f"celery-task-meta-{task_id}")
    return None if raw is None else dict(json.loads(raw))


def reports(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep reports among results: successful tasks that swept (not skipped or deferred)."""
    return [
        r["result"]
        for r in results
        if r.get("status") == "SUCCESS"
        and isinstance(r.get("result"), dict)
        and r["result"]["status"] not in ("skipped", "deferred")
    ]


def queued_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """Messages waiting in a Celery queue on the Redis broker (a list named as the queue)."""
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        raw = client.lrange(queue, 0, -1)
    return [json.loads(message) for message in raw]
