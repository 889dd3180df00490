"""The fleet benchmark (issue 14): K private daemons, each with its own worker and beat as
deployed (lean worker, one host per worker), all on one private Redis; what each host costs
Redis (connections, commands/s, memory) and the machine (worker and beat CPU and RSS), how
long a tick waits for its worker (tick-to-start p50/p95), and whether a frozen daemon and a
dead worker delay anyone else. Then a model, fed by these figures, of how many hosts one
Redis serves within its connection limit and 2 GB.

    uv run python -m bench.fleet                       # K = 1, 4, 16, 32 (as root)
    uv run python -m bench.fleet --sizes 1 4 --window 30
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from janitor.children import interrupt_on_signals, read_json_log
from janitor.settings import Settings
from sandbox.celery_processes import CeleryProcess, Processes
from sandbox.daemons import PrivateDaemon
from sandbox.procfs import descendants
from sandbox.redisserver import PrivateRedis

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "fleet.json"
# Ticks every 10 s, so a window of a minute sees several; production's are 60 s and 5 min,
# and the model scales the per-tick figures to those.
BENCH_INTERVALS = {"JANITOR_KILL_INTERVAL": "10s", "JANITOR_REMOVE_INTERVAL": "10s"}
MAXCLIENTS = 10_000
MEMORY_BUDGET = 2 * 1024**3
RECEIVED = re.compile(r"Task janitor\.(\w+)\[([^\]]+)\] received")
SENT = re.compile(r"Scheduler: Sending due task ([\w-]+):([\w-]+) ")


def _env(host: str, url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JANITOR_", "CELERY_"))}
    env.update(BENCH_INTERVALS)
    env.update({
        "JANITOR_HOSTS": f"{host}={url}", "JANITOR_REDIS_URL": redis_url,
        "JANITOR_LOG_FORMAT": "json", "JANITOR_LOG_LEVEL": "INFO", "JANITOR_DOCKER_TIMEOUT": "2s",
        "JANITOR_STOP_TIMEOUT": "0s", "JANITOR_PRESSURE_HIGH": "0", "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    return env


def _cpu_and_rss(pids: set[int]) -> tuple[float, int]:
    """CPU seconds used so far and resident bytes now, summed over `pids`."""
    ticks, pages, page = 0, 0, os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pages += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK"), pages * page


def _tree(process: CeleryProcess) -> set[int]:
    return {process.pid} | descendants([process.pid])


def _redis_connections(pids: set[int], redis_port: int) -> int:
    """Sockets of `pids` connected to the Redis port, read from /proc/net/tcp and their fds."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == redis_port and fields[3] == "01":
            inodes.add(fields[9])
    found = 0
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                found += target.startswith("socket:[") and target[8:-1] in inodes
        except OSError:
            continue
    return found


def _latencies(beats: Sequence[CeleryProcess], workers: Sequence[CeleryProcess]) -> list[float]:
    """Seconds from beat sending each tick to its worker receiving it."""
    sent: dict[tuple[str, str], list[datetime]] = {}
    for beat in beats:
        for event in read_json_log(beat.log_path):
            if match := SENT.match(event["event"]):
                key = (match.group(2), match.group(1))
                sent.setdefault(key, []).append(datetime.fromisoformat(event["timestamp"]))
    waits = []
    for worker in workers:
        host = worker.hostname.split("-", 1)[0] if worker.hostname else ""
        for event in worker.events():
            if match := RECEIVED.match(event["event"]):
                task = match.group(1).replace("_", "-")
                at = datetime.fromisoformat(event["timestamp"])
                before = [s for s in sent.get((host, task), []) if s <= at]
                if before:
                    waits.append((at - max(before)).total_seconds())
    return waits


def _percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def measure(size: int, window: float, directory: Path, *, faults: bool) -> dict[str, Any]:
    """One fleet of `size` hosts: start it, let it settle, measure over `window` seconds."""
    with ExitStack() as stack:
        server = stack.enter_context(PrivateRedis())
        probe = server.client()
        baseline = probe.info("memory")["used_memory"]
        daemons = [stack.enter_context(PrivateDaemon(f"h{i}")) for i in range(size)]
        procs = stack.enter_context(Processes(directory / f"k{size}"))
        workers, beats = [], []
        for i, daemon in enumerate(daemons):
            env = _env(f"h{i}", daemon.url, server.url)
            workers.append(procs.worker(env, f"h{i}"))
            beats.append(procs.beat(env, f"beat-h{i}"))
        for worker in workers:
            worker.wait_ready(timeout=120 + 5 * size)
        time.sleep(15)  # every beat past its first tick, every pool process connected
        before = probe.info("stats")["total_commands_processed"]
        cpu_before = [_cpu_and_rss(_tree(p))[0] for p in (*workers, *beats)]
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        commands = probe.info("stats")["total_commands_processed"] - before - 2
        after = [_cpu_and_rss(_tree(p)) for p in (*workers, *beats)]
        cpu = [(a[0] - b) / elapsed for a, b in zip(after, cpu_before, strict=True)]
        worker_conns = sum(_redis_connections(_tree(w), server.port) for w in workers)
        beat_conns = sum(_redis_connections(_tree(b), server.port) for b in beats)
        results = list(probe.scan_iter(match="celery-task-meta-*", count=1000))
        result_bytes = [probe.memory_usage(k) or 0 for k in results]
        figures: dict[str, Any] = {
            "hosts": size,
            "window_s": round(elapsed, 1),
            "redis_clients_per_host": (probe.info("clients")["connected_clients"] - 1) / size,
            "worker_connections_per_host": worker_conns / size,
            "beat_connections_per_host": beat_conns / size,
            "commands_per_s_per_host": commands / elapsed / size,
            "memory_per_host_bytes": (probe.info("memory")["used_memory"] - baseline) / size,
            "stored_result_bytes_mean": statistics.fmean(result_bytes) if result_bytes else 0,
            "worker_cpu_per_host": statistics.fmean(cpu[:size]),
            "beat_cpu_per_host": statistics.fmean(cpu[size:]),
            "worker_rss_per_host_mib": statistics.fmean(a[1] for a in after[:size]) / 2**20,
            "beat_rss_per_host_mib": statistics.fmean(a[1] for a in after[size:]) / 2**20,
        }
        waits = _latencies(beats, workers)
        figures.update(tick_to_start_p50_s=_percentile(waits, 0.5), ticks=len(waits))
        figures["tick_to_start_p95_s"] = _percentile(waits, 0.95)
        if faults and size >= 3:
            figures["faults"] = _faults(daemons, workers, beats, window, probe)
        procs.check_alive()
        return figures


def _faults(
    daemons: Sequence[PrivateDaemon],
    workers: Sequence[CeleryProcess],
    beats: Sequence[CeleryProcess],
    window: float,
    probe: redis.Redis[bytes],
) -> dict[str, Any]:
    """Host 0's daemon frozen and host 1's worker SIGKILLed: the others' ticks before and
    during, and the dead worker's queue every 5 s (it grows until its live-worker mark
    expires, then beat withholds its ticks)."""
    others_w, others_b = workers[2:], beats[2:]
    before = _latencies(others_b, others_w)
    daemons[0].freeze()
    workers[1].stopped = True
    workers[1].child.kill()
    queue = []
    deadline = time.monotonic() + max(window, 60.0)
    while time.monotonic() < deadline:
        time.sleep(5)
        queue.append(probe.llen("janitor.h1"))
    daemons[0].thaw()
    during = _latencies(others_b, others_w)[len(before) :]
    return {
        "others_p95_before_s": _percentile(before, 0.95),
        "others_p95_during_s": _percentile(during, 0.95),
        "others_ticks_during": len(during),
        "dead_worker_queue_every_5s": queue,
        "frozen_host_sweeps_failed": len(
            [e for e in workers[0].events("sweep_finished") if e["status"] == "failed"]
        ),
    }


def model(figures: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Hosts one Redis serves, from the per-host figures at production intervals."""
    connections = figures["redis_clients_per_host"]
    ticks_per_day = sum(
        timedelta(days=1) / interval
        for interval in (settings.kill_interval, settings.remove_interval)
    )
    results_per_host = ticks_per_day * settings.result_ttl / timedelta(days=1)
    # What a host costs Redis besides its results: its clients' buffers, its last reports,
    # live-worker mark, identity, bindings (the measured idle memory, results of the short
    # window included, so a slight overcount).
    memory_per_host = (
        results_per_host * figures["stored_result_bytes_mean"] + figures["memory_per_host_bytes"]
    )
    answer: dict[str, Any] = {
        "connections_per_host": connections,
        "result_bytes_per_host_per_day": ticks_per_day * figures["stored_result_bytes_mean"],
        "memory_per_host_bytes": memory_per_host,
        "hosts_within_maxclients": int(MAXCLIENTS / connections),
        "hosts_within_2gb": int(MEMORY_BUDGET / memory_per_host),
    }
    for hosts in (100, 1000):
        answer[f"at_{hosts}"] = {
            "connections": round(hosts * connections),
            "memory_mib": round(hosts * memory_per_host / 2**20),
            "commands_per_s": round(hosts * figures["commands_per_s_per_host"]),
        }
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured per size")
    parser.add_argument("--no-faults", action="store_true", help="skip the frozen/dead hosts")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    interrupt_on_signals()
    directory = Path(f"/tmp/jt-fleet-{os.getpid()}")
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size in args.sizes:
            print(f"fleet: K={size} ...", file=sys.stderr, flush=True)
            last = size == max(args.sizes)
            rows.append(measure(size, args.window, directory, faults=last and not args.no_faults))
            _print_row(rows[-1])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    answer = model(rows[-1], Settings())
    document = {"rows": rows, "model": answer, "flat": _flatness(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(markdown(document))
    return 0


COLUMNS = {
    "hosts": "K",
    "redis_clients_per_host": "Redis clients/host",
    "worker_connections_per_host": "of a worker",
    "beat_connections_per_host": "of a beat",
    "commands_per_s_per_host": "commands/s/host",
    "memory_per_host_bytes": "memory/host (KiB)",
    "tick_to_start_p50_s": "tick-to-start p50 (s)",
    "tick_to_start_p95_s": "p95 (s)",
    "worker_cpu_per_host": "worker CPU (cores)",
    "beat_cpu_per_host": "beat CPU (cores)",
    "worker_rss_per_host_mib": "worker RSS (MiB)",
    "beat_rss_per_host_mib": "beat RSS (MiB)",
}


def markdown(document: dict[str, Any]) -> str:
    """The measurements as a table, then the model they feed, side by side in one printout."""
    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    for row in document["rows"]:
        cells = []
        for key in COLUMNS:
            value = row[key] / 1024 if key == "memory_per_host_bytes" else row[key]
            cells.append(f"{value:.3g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    answer = document["model"]
    lines += [
        "",
        f"K=max over K=1, per host: {document['flat']}",
        f"model: {answer['connections_per_host']:.0f} connections and "
        f"{answer['memory_per_host_bytes'] / 2**20:.2f} MiB per host (results kept "
        f"{answer['result_bytes_per_host_per_day'] / 2**20:.2f} MiB/day): "
        f"{answer['hosts_within_maxclients']} hosts within maxclients {MAXCLIENTS}, "
        f"{answer['hosts_within_2gb']} within 2 GB",
    ]
    for hosts in (100, 1000):
        at = answer[f"at_{hosts}"]
        lines.append(
            f"  {hosts} hosts: {at['connections']} connections, {at['memory_mib']} MiB, "
            f"{at['commands_per_s']} commands/s"
        )
    for row in document["rows"]:
        if "faults" in row:
            lines.append(f"faults at K={row['hosts']}: {row['faults']}")
    return "\n".join(lines)


def _flatness(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per-host Redis figures at the largest K over those at the smallest (goal: <= 1.2)."""
    first, last = rows[0], rows[-1]
    names = ("redis_clients_per_host", "commands_per_s_per_host", "memory_per_host_bytes")
    return {name: round(last[name] / first[name], 3) if first[name] else 0.0 for name in names}


def _print_row(row: dict[str, Any]) -> None:
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}
    print(json.dumps(shown), flush=True)


if __name__ == "__main__":
    sys.exit(main())
