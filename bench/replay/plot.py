"""One PNG timeline per variant, drawn from the JSON alone: host CPU and memory share, starts
per second, the stopped backlog, with the spikes shaded and each sweep marked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

# Chosen before pyplot is imported: there is no display here, and none is wanted.
matplotlib.use("Agg")

import matplotlib.pyplot as plt

SWEEP_COLOURS = {"remove-stopped": "tab:red", "kill-ghosts": "tab:purple", "prune": "tab:red"}


def timeline(name: str, figures: Mapping[str, Any], path: Path) -> Path:
    data = figures["timeline"]
    figure, (cpu, starts, backlog) = plt.subplots(3, 1, sharex=True, figsize=(12, 7))
    host = data["host"]
    cpu.plot([h[0] for h in host], [h[1] * 100 for h in host], label="CPU %", lw=0.8)
    cpu.plot([h[0] for h in host], [h[2] * 100 for h in host], label="memory %", lw=0.8)
    cpu.axhline(80, color="grey", ls="--", lw=0.6)
    cpu.set_ylim(0, 100)
    cpu.set_ylabel("host %")
    cpu.legend(loc="upper right", fontsize="small")
    per_second = data["starts_per_s"]
    starts.bar(range(len(per_second)), per_second, width=1.0, color="tab:green")
    starts.set_ylabel("starts/s")
    lists = data["lists"]
    backlog.plot([s[0] for s in lists], [s[1] for s in lists], label="stopped", color="tab:red")
    backlog.plot([s[0] for s in lists], [s[2] for s in lists], label="running", lw=0.8)
    backlog.set_ylabel("containers")
    backlog.set_xlabel("seconds since the day began")
    backlog.legend(loc="upper left", fontsize="small")
    for spike in figures["spikes"]:
        if spike.get("n"):
            for axis in (cpu, starts, backlog):
                axis.axvspan(spike["start_s"], spike["end_s"], color="orange", alpha=0.15)
    for sweep in figures["sweeps"]:
        colour = SWEEP_COLOURS.get(sweep["task"], "tab:grey")
        backlog.axvline(sweep["at_s"], color=colour, lw=0.6, alpha=0.7)
        cpu.axvline(sweep["at_s"], color=colour, lw=0.4, alpha=0.4)
    for at in figures["deferrals_at_s"]:
        backlog.plot([at], [0], marker="v", color="black", ms=4)
    median = figures["spike_median"]
    figure.suptitle(
        f"{name}: spike start p95 {median['p95_ms']} ms (median over spikes), "
        f"CPU > 80% {figures['cpu_above_80_share']:.1%} of the time; "
        f"lines: sweeps, triangles: deferrals",
        fontsize="medium",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
