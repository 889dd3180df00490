"""The benchmark, shrunk to seconds, so it cannot rot: every case runs its code path with the
janitor, `docker container prune`, `docker image prune` with `docker volume prune`, and the
serial SDK loops, and the spike case's service rows with a real worker and beat on a private
Redis; only the structure of its JSON is asserted, never a timing. dcgc and dcstop are left
out: installing them needs the network."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZE = 20
HOSTS = 2
CASES = {
    "backlog", "ghosts", "idle", "spike", "hosts", "worker", "holders", "unused", "startup",
}  # fmt: skip


def _positive_numbers(figures: dict[str, Any], keys: set[str]) -> None:
    for key in keys:
        value = figures[key]
        assert isinstance(value, int | float), f"{key}: {value!r}"
        assert math.isfinite(value), f"{key}: {value!r}"
        assert value > 0, f"{key}: {value!r}"


def _tools(case: dict[str, Any], expected: set[str], keys: set[str]) -> None:
    assert set(case["tools"]) == expected
    for name, tool in case["tools"].items():
        assert len(tool["rounds"]) == 1, name
        _positive_numbers(tool["median"], keys)


def _spike(spike: dict[str, Any]) -> None:
    rows = spike["rows"]
    assert set(rows) == {
        "no_janitor", "janitor_c8", "janitor_c1", "service_pacing_off", "service_pacing_on",
    }  # fmt: skip
    for name, row in rows.items():
        assert row["all"]["n"] == SIZE, name
        _positive_numbers(row["all"], {"p50_ms", "p95_ms", "p99_ms"})
        if row["by"] == "cli":
            assert row["sweeps"][0]["done"] == SIZE, name
            assert "during_sweep" in row, name
    assert rows["service_pacing_off"]["settings"]["spike_rate"] == "0"
    assert int(rows["service_pacing_on"]["settings"]["spike_rate"]) > 0
    tick_after = spike["tick_after_starts"]
    assert 0 < tick_after < SIZE
    for name in ("service_pacing_off", "service_pacing_on"):
        row = rows[name]
        assert row["by"] == "service", name
        (service,) = row["service"]
        # The real worker removed the whole backlog, whether it deferred first or not.
        assert sum(sweep["done"] for sweep in service["sweeps"]) == SIZE, name
        assert service["tick_after_starts"] == tick_after, name
        # The thread that sent the tick still had starts to make: some began after it.
        assert 0 < row["from_tick"]["n"] < SIZE, name
        _positive_numbers(service, {"tick_s", "spike_s"})
        assert math.isfinite(service["cleared_after_spike_s"]), name
        assert service["deferrals"] >= 0, name
        assert set(row["median"]) >= {"cleared_after_spike_s", "deferrals", "forced"}, name


def _holders(holders: dict[str, Any]) -> None:
    assert (holders["containers"], holders["projects"]) == (SIZE, SIZE // 10)
    layouts = holders["layouts"]
    for name, layout in layouts.items():
        assert layout["start"]["n"] == SIZE, name
        _positive_numbers(layout["start"], {"p50_ms", "p95_ms"})
        _positive_numbers(layout["memory_mib"], {"dockerd", "containerd"})
        # Every container was past its budget; the members of a live project too.
        assert layout["kill_sweep"]["done"] == SIZE, name
    # Structure, not timing: a veth per container against one per project, on the same
    # loopback and bridge.
    per_container = layouts["per_container"]["interfaces"]
    per_project = layouts["per_project"]["interfaces"]
    assert per_container - per_project == SIZE - SIZE // 10


def test_smoke_run_writes_every_case(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", str(SIZE), "--rounds", "1",
         "--hosts", str(HOSTS), "--no-custodian", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    assert "PASS" in done.stdout or "MISS" in done.stdout, done.stdout
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    assert set(document["cases"]) == CASES
    cases = document["cases"]

    for kind in ("created", "exited"):
        backlog = cases["backlog"][kind]
        assert backlog["count"] == SIZE
        _tools(backlog, {"janitor", "prune", "serial_sdk"}, {"wall_s", "per_s"})
        _positive_numbers(backlog["tools"]["janitor"]["median"], {"duration_s", "api_calls"})

    _tools(cases["ghosts"], {"janitor", "serial_kill"}, {"wall_s", "per_s"})

    idle = cases["idle"]
    _tools(idle, {"janitor", "raw_list"}, {"wall_s"})
    _positive_numbers(idle["tools"]["janitor"]["median"], {"sweep_s_max", "duration_s"})
    calls = idle["api_calls_per_sweep"]
    assert set(calls) == {str(SIZE // 10), str(SIZE)}
    assert all(len(per_sweep) == 2 for per_sweep in calls.values())
    # The one structural promise that is not a timing: an idle sweep's calls do not grow.
    assert idle["api_calls_constant"] is True

    _spike(cases["spike"])

    hosts = cases["hosts"]
    assert hosts["hosts"] == HOSTS
    assert set(hosts["configs"]) == {"all_hosts", "one_host"}
    for config in hosts["configs"].values():
        _positive_numbers(config["median"], {"wall_s", "duration_s", "per_s"})

    worker = cases["worker"]
    assert worker["sweep_count"] == SIZE
    _positive_numbers(worker, {"idle_rss_mib", "sweep_peak_rss_mib", "sweep_wall_s", "processes"})

    _holders(cases["holders"])

    unused = cases["unused"]
    assert unused["count"] == SIZE
    _tools(unused, {"janitor", "prune"}, {"wall_s", "per_s"})
    _positive_numbers(unused["tools"]["janitor"]["median"], {"first_sweep_s", "duration_s"})

    startup = cases["startup"]["commands"]
    assert set(startup) == {
        "version", "help", "sweep_help", "idle_sweep", "idle_sweep_with_redis",
        "idle_sweep_dev_env", "idle_sweep_no_bytecode",
    }  # fmt: skip
    for name, command in startup.items():
        _positive_numbers(command["median"], {"wall_s", "client_cpu_s"})
        assert "ratio_to_dcgc_help" not in command, f"{name}: no dcgc in the smoke run"

    verdicts = {(v["case"], v["name"]) for v in document["targets"]}
    assert {case for case, _ in verdicts} == {
        "backlog", "ghosts", "idle", "spike", "hosts", "unused", "startup",
    }  # fmt: skip
    assert any(name.startswith("service_pacing_on") for case, name in verdicts if case == "spike")
    machine = document["meta"]["machine"]
    assert machine["nproc"] > 0
    assert machine["dockerd"]
    assert document["meta"]["custodian"] is None


# The replay's quick day: no cleanup and the janitor with pacing on, the two ends of its table.
REPLAY_VARIANTS = ("none", "janitor_on")
REPLAY_FIGURES = (
    "cpu_above_80_share", "memory_above_80_share", "cpu_mean", "backlog_max", "backlog_end",
    "backlog_mean", "list_p50_ms", "list_p95_ms", "cleaner_cpu_s", "cleaner_cpu_share",
)  # fmt: skip
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _replay_variant(name: str, variant: dict[str, Any], spikes: int) -> None:
    for key in REPLAY_FIGURES:
        value = variant[key]
        assert isinstance(value, int | float), f"{name}.{key}: {value!r}"
        assert math.isfinite(value), f"{name}.{key}: {value!r}"
    assert 0 <= variant["cpu_above_80_share"] <= 1, name
    assert variant["list_p95_ms"] >= variant["list_p50_ms"] > 0, name
    assert len(variant["spikes"]) == spikes, name
    for spike in variant["spikes"]:
        assert spike["n"] > 0, (name, spike)
        assert 0 < spike["p50_ms"] <= spike["p95_ms"] <= spike["p99_ms"], (name, spike)
        assert spike["end_s"] > spike["start_s"] >= 0, (name, spike)
    assert set(variant["spike_median"]) == {
        "p50_ms", "p95_ms", "p99_ms", "cleared_after_s", "backlog_15s_after",
    }  # fmt: skip
    assert variant["spike_median"]["p95_ms"] > 0, name
    timeline = variant["timeline"]
    assert timeline["host"], name
    assert timeline["lists"], name
    assert sum(timeline["starts_per_s"]) == variant["all_starts"]["n"], name
    # Every container the day started is accounted for: still on the host, or reported
    # removed by the cleaner (its own log for the janitor).
    counts = variant["accounting"]
    assert counts["created"] + counts["not_created"] == counts["planned"], (name, counts)
    assert counts["created"] > 0, (name, counts)
    assert counts["removed"] == counts["removed_reported"], (name, counts)


def test_replay_quick_day_measures_every_variant_and_draws_its_timeline(tmp_path: Path) -> None:
    out = tmp_path / "replay.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--quick", "--no-custodian",
         "--variants", *REPLAY_VARIANTS, "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    assert "| none |" in done.stdout, done.stdout
    document = json.loads(out.read_text())
    assert document["errors"] == {}
    variants = document["variants"]
    assert tuple(variants) == REPLAY_VARIANTS
    spikes = document["shape"]["spikes"]
    for name, variant in variants.items():
        _replay_variant(name, variant, spikes)
        png = Path(document["png"][name])
        assert png.parent == tmp_path, png
        assert png.read_bytes().startswith(PNG_MAGIC), png
        assert png.stat().st_size > len(PNG_MAGIC), png
    none, janitor = variants["none"], variants["janitor_on"]
    assert none["accounting"]["removed"] == 0
    assert none["cleaner_cpu_s"] == 0
    assert janitor["settings"]["spike_rate"] == "60"
    assert any(sweep["task"] == "remove-stopped" for sweep in janitor["sweeps"])
    assert janitor["cleaner_cpu_s"] > 0
    # Nobody cleaned one day; the janitor cleaned the same day.
    assert none["backlog_end"] >= janitor["backlog_end"]
    assert document["ratios"]["none"]["p95_ms_vs_none"] == 1
    machine = document["meta"]["machine"]
    assert len(machine["loadavg_start"]) == len(machine["loadavg_end"]) == 3
