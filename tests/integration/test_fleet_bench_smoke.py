"""The fleet benchmark, shrunk to two hosts and seconds, so it cannot rot: two private daemons,
each with its own lean worker and beat, on one private Redis; only the structure of its JSON
and the model's arithmetic are asserted, never a timing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PER_HOST = (
    "redis_clients_per_host", "worker_connections_per_host", "beat_connections_per_host",
    "commands_per_s_per_host", "memory_per_host_bytes", "stored_result_bytes_mean",
    "worker_rss_per_host_mib", "beat_rss_per_host_mib",
)  # fmt: skip


def test_two_host_fleet_run_measures_every_figure_and_the_model(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--sizes", "2", "--window", "10", "--no-faults",
         "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(out.read_text())
    (row,) = document["rows"]
    assert row["hosts"] == 2
    for name in PER_HOST:
        assert math.isfinite(row[name]), name
        assert row[name] > 0, name
    assert (
        row["worker_connections_per_host"] + row["beat_connections_per_host"]
        <= (row["redis_clients_per_host"])
    )
    assert row["ticks"] > 0
    assert row["tick_to_start_p95_s"] >= row["tick_to_start_p50_s"] >= 0
    model = document["model"]
    assert model["hosts_within_maxclients"] == int(10_000 / row["redis_clients_per_host"])
    assert model["at_1000"]["connections"] == round(1000 * row["redis_clients_per_host"])
    assert set(document["flat"]) == {
        "redis_clients_per_host", "commands_per_s_per_host", "memory_per_host_bytes",
    }  # fmt: skip
