"""Live processes as /proc shows them: who is whose parent, who descends from whom, who is
still alive (a zombie is not). For tearing down and measuring process trees of our own."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def _state_and_parent(stat: str) -> tuple[str, int]:
    # The command name in stat may hold spaces and parentheses; the fields after it do not.
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def parents() -> dict[int, int]:
    """Every live process (zombies left out) -> its parent's pid."""
    found = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = _state_and_parent((entry / "stat").read_text())
        except OSError:
            continue  # exited while we looked
        if state != "Z":
            found[int(entry.name)] = ppid
    return found


def descendants(roots: Iterable[int], parent_of: dict[int, int] | None = None) -> set[int]:
    """The live processes below `roots` (children, grandchildren, ...), roots excluded."""
    parent_of = parents() if parent_of is None else parent_of
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier} - found
        found |= frontier
    return found


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    return sorted(child for child, parent in parents().items() if parent == pid)


def is_alive(pid: int) -> bool:
    try:
        state, _ = _state_and_parent((PROC / str(pid) / "stat").read_text())
    except OSError:
        return False
    return state != "Z"


def kill_trees_naming(folder: Path, settle: float = 10.0) -> list[list[str]]:
    """SIGKILL every process that names `folder` on its command line, and all below it; wait
    up to `settle` seconds for them to go. Returns the argv of each one that named it.

    For servers of ours whose helpers leave the server's process group (containerd, its
    shims, Podman's conmon): they name their state folder; their containers descend from them.
    """
    marker = f"{folder}/".encode()
    parent_of = parents()
    roots: dict[int, list[str]] = {}
    for pid in parent_of:
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue  # exited while we looked
        if marker in cmdline:
            roots[pid] = cmdline.decode(errors="replace").split("\0")
    doomed = set(roots) | descendants(roots, parent_of)
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + settle
    while any(is_alive(pid) for pid in doomed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return list(roots.values())
