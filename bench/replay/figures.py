"""The replay's figures, from one variant's raw samples, and the ratios between variants.
Pure: samples in, plain JSON-ready dicts out."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness import percentile
from bench.replay.cleaners import Sweep
from bench.replay.replayer import Start
from bench.replay.sampler import HostSample, ListSample
from bench.replay.schedule import SpikeWindow

# "Busy" as the operators who asked for the janitor measure it.
BUSY = 0.8
# The goal for a spike's backlog: gone this long after the spike's last start.
CLEARED_WITHIN_S = 15.0

Figures = dict[str, Any]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _latencies(starts: Sequence[Start]) -> Figures:
    values = [s.latency_s for s in starts]
    return {
        "n": len(values),
        "p50_ms": _ms(percentile(values, 50)),
        "p95_ms": _ms(percentile(values, 95)),
        "p99_ms": _ms(percentile(values, 99)),
    }


def _first_clear(lists: Sequence[ListSample], spike: int, after_s: float) -> float | None:
    for sample in lists:
        if sample.at_s >= after_s and sample.spike_left.get(spike, 0) == 0:
            return round(sample.at_s - after_s, 1)
    return None


def _backlog_at(lists: Sequence[ListSample], at_s: float) -> int | None:
    later = [sample for sample in lists if sample.at_s >= at_s]
    return later[0].stopped if later else None


def spikes(
    starts: Sequence[Start], windows: Sequence[SpikeWindow], lists: Sequence[ListSample]
) -> list[Figures]:
    """Per spike: start latency, when its last start ended, how long until none of its
    short-lived containers was left on the host, and the stopped backlog 15 s after it."""
    rows = []
    for window in windows:
        mine = [s for s in starts if s.planned.spike == window.index and not s.error]
        if not mine:
            rows.append({"index": window.index, "n": 0})
            continue
        end = max(s.began_s + s.latency_s for s in mine)
        rows.append({
            "index": window.index,
            **_latencies(mine),
            # How late the replayer itself began them: large means our pool, not the daemon,
            # held the spike back.
            "lag_p95_ms": _ms(percentile([s.began_s - s.planned.at_s for s in mine], 95)),
            "start_s": round(min(s.began_s for s in mine), 1),
            "end_s": round(end, 1),
            "cleared_after_s": _first_clear(lists, window.index, end),
            "backlog_15s_after": _backlog_at(lists, end + CLEARED_WITHIN_S),
        })  # fmt: skip
    return rows


def median_over_spikes(values: Sequence[float | None]) -> float | None:
    """The median, where None (a spike never cleared, a figure not seen) counts as worse than
    every figure: a median of "never" is None, never a flattering figure of the others."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: math.inf if v is None else v)
    middles = ordered[(len(ordered) - 1) // 2 : len(ordered) // 2 + 1]
    known = [v for v in middles if v is not None]
    return round(statistics.fmean(known), 1) if len(known) == len(middles) else None


def starts_per_second(starts: Sequence[Start], seconds: int) -> list[int]:
    """Completed starts in each second of the day."""
    counts = [0] * max(1, seconds)
    for start in starts:
        if not start.error:
            second = int(start.began_s + start.latency_s)
            if 0 <= second < len(counts):
                counts[second] += 1
    return counts


def variant(
    *,
    starts: Sequence[Start],
    windows: Sequence[SpikeWindow],
    host: Sequence[HostSample],
    lists: Sequence[ListSample],
    sweeps: Sequence[Sweep],
    deferrals: Sequence[float],
    elapsed_s: float,
    nproc: int,
    accounting: Figures,
) -> Figures:
    """Every figure of one variant, and its timeline for the PNG."""
    per_spike = spikes(starts, windows, lists)
    measured = [row for row in per_spike if row["n"]]
    cleaner_cpu = host[-1].cleaner_cpu_s - host[0].cleaner_cpu_s if len(host) > 1 else 0.0
    span = host[-1].at_s - host[0].at_s if len(host) > 1 else elapsed_s
    list_latency = [sample.latency_s for sample in lists]
    return {
        "elapsed_s": round(elapsed_s, 1),
        "samples": len(host),
        "cpu_above_80_share": round(sum(s.cpu > BUSY for s in host) / len(host), 3),
        "memory_above_80_share": round(sum(s.memory > BUSY for s in host) / len(host), 3),
        "cpu_mean": round(statistics.fmean(s.cpu for s in host), 3),
        "memory_max": round(max(s.memory for s in host), 3),
        "spikes": per_spike,
        "spike_median": {
            key: median_over_spikes([row[key] for row in measured])
            for key in ("p50_ms", "p95_ms", "p99_ms", "cleared_after_s", "backlog_15s_after")
        },
        "spikes_not_cleared": sum(1 for row in measured if row["cleared_after_s"] is None),
        "all_starts": _latencies([s for s in starts if not s.error]),
        "backlog_max": max(sample.stopped for sample in lists),
        "backlog_end": lists[-1].stopped,
        "backlog_mean": round(statistics.fmean(sample.stopped for sample in lists), 1),
        "list_calls": len(lists),
        "list_p50_ms": _ms(percentile(list_latency, 50)),
        "list_p95_ms": _ms(percentile(list_latency, 95)),
        # Cores the cleaner kept busy on average, and that as a share of the machine.
        "cleaner_cpu_s": round(cleaner_cpu, 2),
        "cleaner_cores": round(cleaner_cpu / span, 4) if span > 0 else 0.0,
        "cleaner_cpu_share": round(cleaner_cpu / span / nproc, 4) if span > 0 else 0.0,
        "sweeps": [vars(sweep) for sweep in sweeps],
        "deferrals_at_s": list(deferrals),
        "accounting": accounting,
        "timeline": {
            "host": [[s.at_s, round(s.cpu, 3), round(s.memory, 3)] for s in host],
            "lists": [[s.at_s, s.stopped, s.running, _ms(s.latency_s)] for s in lists],
            "starts_per_s": starts_per_second(starts, int(elapsed_s) + 1),
        },
    }


def _ratio(value: float | None, anchor: float | None) -> float | None:
    if value is None or not anchor:
        return None
    return round(value / anchor, 3)


def ratios(variants: Mapping[str, Figures], anchor: str = "none") -> Figures:
    """Spike p50/p95/p99 (medians over spikes) and list-call p95 of each variant against the
    no-cleanup variant; and the pacing variants against each other and against cron."""
    result: Figures = {}
    base = variants.get(anchor)
    for name, figures in variants.items():
        if base is None:
            break
        result[name] = {
            f"{key}_vs_none": _ratio(figures["spike_median"][key], base["spike_median"][key])
            for key in ("p50_ms", "p95_ms", "p99_ms")
        }
        result[name]["list_p95_vs_none"] = _ratio(figures["list_p95_ms"], base["list_p95_ms"])
    pairs = [("janitor_on", "janitor_off"), ("janitor_on", "cron"), ("janitor_off", "cron")]
    for one, other in pairs:
        if one in variants and other in variants:
            result[f"{one}_vs_{other}"] = {
                "p95_ms": _ratio(
                    variants[one]["spike_median"]["p95_ms"],
                    variants[other]["spike_median"]["p95_ms"],
                ),
                "cleaner_cpu_s": _ratio(
                    variants[one]["cleaner_cpu_s"], variants[other]["cleaner_cpu_s"]
                ),
            }
    return result


COLUMNS = {
    "cpu>80%": lambda f, r: f"{f['cpu_above_80_share']:.1%}",
    "mem>80%": lambda f, r: f"{f['memory_above_80_share']:.1%}",
    "spike p50 ms": lambda f, r: _num(f["spike_median"]["p50_ms"]),
    "p95 ms": lambda f, r: _num(f["spike_median"]["p95_ms"]),
    "p99 ms": lambda f, r: _num(f["spike_median"]["p99_ms"]),
    "p95 / none": lambda f, r: _num(r.get("p95_ms_vs_none"), missing="-"),
    "cleared after spike s": lambda f, r: _num(f["spike_median"]["cleared_after_s"]),
    "backlog 15 s after": lambda f, r: _num(f["spike_median"]["backlog_15s_after"], "-"),
    "backlog max / end": lambda f, r: f"{f['backlog_max']} / {f['backlog_end']}",
    "list p50 / p95 ms": lambda f, r: f"{f['list_p50_ms']} / {f['list_p95_ms']}",
    "cleaner CPU s (share)": lambda f, r: f"{f['cleaner_cpu_s']} ({f['cleaner_cpu_share']:.2%})",
    "sweeps": lambda f, r: str(len(f["sweeps"])),
}


def _num(value: float | None, missing: str = "never") -> str:
    return missing if value is None else f"{value:g}"


def markdown(document: Mapping[str, Any]) -> str:
    """The summary table: one row per variant, medians over spikes, ratios against none."""
    variants: Mapping[str, Figures] = document["variants"]
    table_ratios: Figures = document["ratios"]
    lines = [
        "| variant | " + " | ".join(COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for name, figures in variants.items():
        cells = [render(figures, table_ratios.get(name, {})) for render in COLUMNS.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for key, pair in table_ratios.items():
        if "_vs_" in key:
            lines.append(f"\n{key}: spike p95 {_num(pair['p95_ms'], '-')}x, cleaner CPU "
                         f"{_num(pair['cleaner_cpu_s'], '-')}x")  # fmt: skip
    return "\n".join(lines)
