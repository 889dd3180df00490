"""Host pressure: the share of memory and CPU in use, read from /proc where the janitor runs.

Docker's /info reports a host's capacity (MemTotal, NCPU) but not its use, so only hosts the
worker shares a kernel with (unix-socket hosts, a worker per host) have a reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from janitor.model import HostConfig

# Long enough for /proc/stat's jiffies to move on an idle host, short enough for a task.
CPU_SAMPLE_S = 0.25


@dataclass(frozen=True, slots=True)
class Reading:
    memory: float  # share of MemTotal not available, 0..1
    cpu: float  # share of CPU time not idle over the sample, 0..1

    @property
    def peak(self) -> float:
        return max(self.memory, self.cpu)


def can_read(host: HostConfig) -> bool:
    """Whether this worker sees the host's /proc: only for a daemon on the same machine."""
    return host.url.startswith("unix://")


def read(proc_root: Path, sample_s: float = CPU_SAMPLE_S) -> Reading:
    """Read memory and CPU use; OSError or ValueError when /proc cannot be read."""
    before = _cpu_times(proc_root)
    time.sleep(sample_s)
    after = _cpu_times(proc_root)
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle + iowait
    cpu = 0.0 if total <= 0 else max(0.0, min(1.0, 1 - idle / total))
    return Reading(memory=_memory_use(proc_root), cpu=cpu)


def _memory_use(proc_root: Path) -> float:
    fields: dict[str, int] = {}
    for line in (proc_root / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip():
            fields[name] = int(rest.split()[0])
    total = fields["MemTotal"]
    available = fields.get("MemAvailable", fields.get("MemFree", total))
    return max(0.0, min(1.0, 1 - available / total)) if total else 0.0


def _cpu_times(proc_root: Path) -> list[int]:
    for line in (proc_root / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            times = [int(value) for value in line.split()[1:]]
            return (times + [0] * 8)[:8]
    raise ValueError(f"no cpu line in {proc_root / 'stat'}")
