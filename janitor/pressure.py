"""Host pressure: the share of memory and CPU in use, read from /proc where the janitor runs,
and of the Docker root filesystem's blocks and inodes, where this worker sees that filesystem.

Docker's /info reports a host's capacity (MemTotal, NCPU) but not its use, so only hosts the
worker shares a kernel with (unix-socket hosts, a worker per host) have a reading; the Docker
root is seen at JANITOR_DOCKER_ROOT, or at the daemon's DockerRootDir for a unix-socket host.
"""

from __future__ import annotations

import os
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
    disk: DiskReading | None = None

    @property
    def peak(self) -> float:
        disk = (self.disk.blocks, self.disk.inodes) if self.disk is not None else ()
        return max(self.memory, self.cpu, *disk)


@dataclass(frozen=True, slots=True)
class DiskReading:
    blocks: float  # share of the filesystem's blocks in use, 0..1
    inodes: float  # share of its inodes in use, 0..1 (0 where it has no inode limit)
    capacity: int  # bytes


def docker_root(configured: Path | None, host: HostConfig, daemon_root: str) -> Path | None:
    """Where this worker sees the host's Docker root filesystem; None where it cannot.

    The daemon's own DockerRootDir counts only for a unix-socket host, and only when the
    directory here looks like a Docker root (a worker in a container that does not mount it
    has no such directory, or an empty one).
    """
    if configured is not None:
        return configured
    if not can_read(host) or not daemon_root:
        return None
    root = Path(daemon_root)
    try:
        return root if (root / "image").is_dir() and (root / "containers").is_dir() else None
    except OSError:
        return None


def read_disk(root: Path) -> DiskReading:
    """The filesystem holding `root`; OSError when it cannot be read."""
    stat = os.statvfs(root)
    blocks = 1 - stat.f_bavail / stat.f_blocks if stat.f_blocks else 0.0
    inodes = 1 - stat.f_favail / stat.f_files if stat.f_files else 0.0
    return DiskReading(
        blocks=max(0.0, min(1.0, blocks)),
        inodes=max(0.0, min(1.0, inodes)),
        capacity=stat.f_blocks * stat.f_frsize,
    )


def can_read(host: HostConfig) -> bool:
    """Whether this worker sees the host's /proc: only for a daemon on the same machine."""
    return host.url.startswith("unix://")


def read(proc_root: Path, sample_s: float = CPU_SAMPLE_S, root: Path | None = None) -> Reading:
    """Read memory and CPU use, and disk use at `root` when given; OSError or ValueError when
    /proc or the disk cannot be read."""
    before = _cpu_times(proc_root)
    time.sleep(sample_s)
    after = _cpu_times(proc_root)
    total = sum(after) - sum(before)
    idle = (after[3] + after[4]) - (before[3] + before[4])  # idle + iowait
    cpu = 0.0 if total <= 0 else max(0.0, min(1.0, 1 - idle / total))
    disk = read_disk(root) if root is not None else None
    return Reading(memory=_memory_use(proc_root), cpu=cpu, disk=disk)


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
