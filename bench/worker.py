"""The worker-footprint case: a real `celery -A janitor worker` on a private redis-server,
its resident memory idle and at its peak while it sweeps a large backlog."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.harness import CELERY, REPO_ROOT, BenchError, Host, janitor_env, require

READY_TIMEOUT = 60.0
SWEEP_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0
IDLE_SETTLE_S = 2.0
IDLE_SAMPLE_S = 3.0
IDLE_SAMPLE_EVERY_S = 0.1
# Often enough to catch a peak that lasts a fraction of a second, rare enough not to matter.
SAMPLE_EVERY_S = 0.02


def measure(host: Host, count: int, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    redis_dir = workdir / "redis"
    redis_dir.mkdir(exist_ok=True)
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(port, redis_dir)
    proc: subprocess.Popen[bytes] | None = None
    app = Celery("janitor-bench", broker=url, backend=url)
    try:
        env = janitor_env(
            [host],
            redis_url=url,
            created_grace="1s",
            stopped_grace="1s",
            max_actions=str(count * 2 + 10),
        )
        host.empty()
        say("worker: starting celery -A janitor worker")
        log = (workdir / "worker.log").open("wb")
        proc = subprocess.Popen(
            [CELERY, "-A", "janitor", "worker", "--loglevel", "INFO"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until_ready(app, proc, workdir / "worker.log")
        time.sleep(IDLE_SETTLE_S)
        idle = []
        for _ in range(int(IDLE_SAMPLE_S / IDLE_SAMPLE_EVERY_S)):
            idle.append(tree_rss_kib(proc.pid))
            time.sleep(IDLE_SAMPLE_EVERY_S)
        processes = len(descendants(proc.pid)) + 1
        host.create(count)
        time.sleep(1.6)
        say(f"worker: remove_stopped over {count} containers")
        started = time.perf_counter()
        result = app.send_task(
            "janitor.remove_stopped", args=[host.name], queue=f"janitor.{host.name}"
        )
        peak = max(idle)
        while not result.ready():
            peak = max(peak, tree_rss_kib(proc.pid))
            if time.perf_counter() - started > SWEEP_TIMEOUT:
                raise BenchError("the worker's sweep did not finish")
            time.sleep(SAMPLE_EVERY_S)
        wall = time.perf_counter() - started
        report: dict[str, Any] = result.get(timeout=10)
        done = int(report["counts"].get("done", 0))
        require(done == count, f"the worker removed {done} of {count}: {report.get('error')}")
        return {
            "processes": processes,
            "idle_rss_mib": round(max(idle) / 1024, 1),
            "sweep_count": count,
            "sweep_peak_rss_mib": round(peak / 1024, 1),
            "sweep_wall_s": round(wall, 3),
            "sweep_duration_s": report["duration_s"],
        }
    finally:
        app.close()
        if proc is not None:
            stop_process(proc)
        server.terminate()
        server.wait(STOP_TIMEOUT)
        shutil.rmtree(redis_dir, ignore_errors=True)
        host.empty()


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants (the prefork pool), in KiB."""
    total = 0
    for member in (pid, *descendants(pid)):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue  # a pool child recycled between the two reads
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def descendants(pid: int) -> list[int]:
    parent_of: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parent_of.items() if parent in frontier}
        found += frontier
    return found


def wait_until_ready(app: Celery, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not app.control.ping(timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise BenchError(f"the Celery worker did not come up; end of its log:\n{tail}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM is Celery's warm shutdown: the pool children exit with the main process.
    pool = descendants(proc.pid)
    proc.terminate()
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in pool:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    # Started in a session of its own: whatever outlived the leader (an embedded beat's
    # children) still carries its group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server not found on PATH: apt-get install redis-server")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "no", "--daemonize", "no"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    # redis-py retries a refused connection with backoff by default: one try per poll here.
    no_retry = Retry(NoBackoff(), 0)
    with redis.Redis("127.0.0.1", port, socket_timeout=1, retry=no_retry) as probe:
        while True:
            try:
                probe.ping()
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    raise BenchError(f"redis-server did not answer on port {port}") from None
                time.sleep(0.05)
            else:
                return server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
