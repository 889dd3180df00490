"""Live processes as /proc shows them: who is whose parent, who descends from whom, who is
still alive (a zombie is not). For tearing down and measuring process trees of our own."""

from __future__ import annotations

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
