"""The worker-footprint case: a real `celery -A janitor worker` on a private redis-server,
its resident memory idle and at its peak while it sweeps a large backlog."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import Celery

from bench.harness import BenchError, Host, janitor_env, require
from janitor.children import ChildError
from sandbox.celery_processes import CeleryProcess, start_worker
from sandbox.procfs import descendants
from sandbox.redisserver import PrivateRedis

READY_TIMEOUT = 60.0
SWEEP_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0
IDLE_SETTLE_S = 2.0
IDLE_SAMPLE_S = 3.0
IDLE_SAMPLE_EVERY_S = 0.1
# Often enough to catch a peak that lasts a fraction of a second, rare enough not to matter.
SAMPLE_EVERY_S = 0.02


def measure(host: Host, count: int, workdir: Path, say: Callable[[str], None]) -> dict[str, Any]:
    process: CeleryProcess | None = None
    with PrivateRedis() as broker:
        app = Celery("janitor-bench", broker=broker.url, backend=broker.url)
        try:
            env = janitor_env(
                [host],
                redis_url=broker.url,
                created_grace="1s",
                stopped_grace="1s",
                max_actions=str(count * 2 + 10),
            )
            host.empty()
            say("worker: starting celery -A janitor worker")
            process = start_worker(env, hostname="bench@janitor", log_path=workdir / "worker.log")
            try:
                process.wait_ready(READY_TIMEOUT)
            except (ChildError, TimeoutError) as exc:
                raise BenchError(f"the Celery worker did not come up: {exc}") from None
            time.sleep(IDLE_SETTLE_S)
            idle = []
            for _ in range(int(IDLE_SAMPLE_S / IDLE_SAMPLE_EVERY_S)):
                idle.append(tree_rss_kib(process.pid))
                time.sleep(IDLE_SAMPLE_EVERY_S)
            processes = len(descendants([process.pid])) + 1
            host.create(count)
            time.sleep(1.6)
            say(f"worker: remove_stopped over {count} containers")
            started = time.perf_counter()
            result = app.send_task(
                "janitor.remove_stopped", args=[host.name], queue=f"janitor.{host.name}"
            )
            peak = max(idle)
            while not result.ready():
                peak = max(peak, tree_rss_kib(process.pid))
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
            if process is not None:
                process.stop(STOP_TIMEOUT)
            host.empty()


def tree_rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants (the prefork pool), in KiB."""
    total = 0
    for member in (pid, *descendants([pid])):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue  # a pool child recycled between the two reads
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total
