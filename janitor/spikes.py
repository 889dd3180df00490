"""The spawn-spike detector: from container start times to "a spike is on", with hysteresis.

Pure: the caller feeds it start times and asks at instants of its choosing, both on the
daemon's clock; it reads no clock and does no I/O.

A spike is on once the last `WINDOW` held more starts than `JANITOR_SPIKE_RATE` allows over it
(and never fewer than `MIN_STARTS`, so a few starts are never a spike); it stays on until the
last `STAY_WINDOW` holds fewer than half of what that rate allows over it. A burst at twice
the rate or more is seen in under `WINDOW` / 2; the gap at most `STAY_WINDOW` after the last
start.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOW = timedelta(seconds=3)
# Longer than WINDOW, so that a spike on a loaded daemon, whose starts stall for a moment, is
# not taken for its end; short enough that the gap after it is seen within 5 s.
STAY_WINDOW = timedelta(seconds=4)
# Three starts at once are a user's compose project coming up, not a spike.
MIN_STARTS = 3
# However fast the starts come, the record stays this small: a rate past it is a spike anyway.
MAX_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Start counts over `WINDOW` that turn a spike on and keep it on."""

    on: int
    stay_on: int

    @classmethod
    def for_rate(cls, per_minute: int) -> Thresholds:
        allowed = per_minute * WINDOW.total_seconds() / 60
        # More than the rate allows over the window: a steady trickle at or under it fits in
        # ceil(allowed) starts, never one more.
        on = max(MIN_STARTS, math.ceil(allowed) + 1)
        # At least half the rate's share of the longer window keeps it on.
        half = per_minute * STAY_WINDOW.total_seconds() / 60 / 2
        return cls(on=on, stay_on=min(on - 1, max(1, math.floor(half))))


@dataclass(frozen=True, slots=True)
class SpikeView:
    """What the detector says at one instant."""

    spiking: bool
    rate_per_min: float
    # When the spike was seen to begin (the start that tipped it), while it is on.
    since: datetime | None = None
    # The first start in the window at that moment: where the spike itself began.
    began_at: datetime | None = None


class SpikeDetector:
    """A bounded record of recent starts, and whether they make a spike now."""

    def __init__(self, per_minute: int) -> None:
        self.thresholds = Thresholds.for_rate(per_minute)
        self._starts: deque[datetime] = deque(maxlen=MAX_KEPT)
        self._since: datetime | None = None
        self._began_at: datetime | None = None

    def add(self, started_at: datetime) -> None:
        if self._starts and started_at < self._starts[-1]:
            # A start replayed after a reconnect, out of order: counted where it belongs.
            self._starts = deque(sorted([*self._starts, started_at]), maxlen=MAX_KEPT)
        else:
            self._starts.append(started_at)

    def reset(self) -> None:
        """Forget everything (the stream was lost: nothing is known any more)."""
        self._starts.clear()
        self._since = self._began_at = None

    def view(self, now: datetime) -> SpikeView:
        """Whether a spike is on at `now`; moves the state on (call it in time order)."""
        while self._starts and self._starts[0] <= now - STAY_WINDOW:
            self._starts.popleft()
        kept = [at for at in self._starts if at <= now]
        recent = [at for at in kept if at > now - WINDOW]
        if self._since is None and len(recent) >= self.thresholds.on:
            self._since, self._began_at = now, recent[0]
        elif self._since is not None and len(kept) < self.thresholds.stay_on:
            self._since = self._began_at = None
        rate = len(recent) * 60 / WINDOW.total_seconds()
        return SpikeView(self._since is not None, rate, self._since, self._began_at)
