"""The sweep engine's brakes: the halt every action reads, the lease confirmed per batch, and
what a deadline left for the next tick.

They stop a sweep; what to sweep and how to act are the engine's and the kinds' business.
"""

from __future__ import annotations

import enum
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from janitor.locks import Lease
from janitor.model import ActionResult, Outcome, Status
from janitor.vocabulary import Detail


class Halt:
    """Set once by the first action that finds the sweep must stop; read by all others."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.status = Status.OK
        # What every action not started because of it is refused with.
        self.detail = Detail.SWEEP_STOPPED

    def __call__(
        self, reason: str, status: Status = Status.FAILED, detail: Detail = Detail.SWEEP_STOPPED
    ) -> None:
        if not self._event.is_set():
            self.reason, self.status, self.detail = reason, status, detail
            self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


class LeaseBatches:
    """The lease confirmed once per batch of at most `size` action starts, not per action:
    a lost lease stops the sweep before the next batch, with at most one batch in flight."""

    def __init__(self, lease: Lease, size: int, on_batch: Callable[[], None]) -> None:
        self._lease = lease
        self._size = max(1, size)
        self._on_batch = on_batch
        self._lock = threading.Lock()
        self._left = 0

    def admit(self) -> None:
        """Raise LeaseLostError unless the lease was confirmed for this action's batch."""
        with self._lock:
            if self._left == 0:
                self._lease.confirm()  # raises before the batch is granted, so all retry
                self._left = self._size
                self._on_batch()
            self._left -= 1


Snapshot = TypeVar("Snapshot")


class Unreached(enum.Enum):
    """What an inspect the deadline kept from starting gives instead of an answer."""

    NOT_REACHED = "not reached"


NOT_REACHED = Unreached.NOT_REACHED


@dataclass(frozen=True, slots=True)
class Inspected(Generic[Snapshot]):
    """The candidates as inspected: those that could not be (the daemon answered an error),
    and those the deadline left for the next tick."""

    snapshots: list[Snapshot]
    failed: int = 0
    not_reached: int = 0


def log_cut_short(
    log: Any,
    *,
    candidates: int,
    inspected: Inspected[Any],
    results: Sequence[ActionResult],
    dependents_not_read: int = 0,
) -> None:
    """The one line that says a tick ran out of time, and what it left for the next."""
    outcomes = Counter(r.outcome for r in results)
    log.warning(
        "sweep_cut_short",
        candidates=candidates,
        inspected=len(inspected.snapshots),
        not_inspected=inspected.not_reached,
        done=outcomes[Outcome.DONE],
        not_acted=sum(1 for r in results if r.detail == Detail.DEADLINE_REACHED),
        dependents_not_read=dependents_not_read,
        why="deadline reached; the rest waits for the next tick",
    )
