"""The compressed day as plain data: when each container starts, how long it runs, which spike
it belongs to. Pure and seeded, so every variant of a run replays the very same day."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Shape:
    """What the day looks like; the defaults are the full run (about 20 minutes a variant)."""

    spikes: int = 5
    spike_size: tuple[int, int] = (200, 300)
    spike_length: timedelta = timedelta(seconds=45)
    # Quiet time between spikes; None spreads the spikes over `duration` instead.
    gap: timedelta | None = None
    duration: timedelta = timedelta(minutes=20)
    # Short-lived containers of the quiet time, per minute.
    trickle_per_min: float = 6.0
    runtime_s: tuple[float, float] = (0.5, 3.0)
    ghost_share: float = 0.03
    # Quiet time before the first spike: the cleaner settles, the sampler sees a baseline.
    lead: timedelta = timedelta(seconds=30)

    @classmethod
    def quick(cls) -> Shape:
        """Two small spikes in well under a minute: for the smoke test, not for figures."""
        return cls(
            spikes=2,
            spike_size=(20, 30),
            spike_length=timedelta(seconds=6),
            gap=timedelta(seconds=16),
            trickle_per_min=12.0,
            ghost_share=0.05,
            lead=timedelta(seconds=6),
        )

    @property
    def period(self) -> timedelta:
        """One spike and the quiet gap after it."""
        if self.gap is not None:
            return self.spike_length + self.gap
        return (self.duration - self.lead) / self.spikes

    @property
    def total(self) -> timedelta:
        return self.lead + self.spikes * self.period


@dataclass(frozen=True)
class Planned:
    """One container of the day: `at_s` after the replay began; a ghost never exits."""

    serial: int
    at_s: float
    runtime_s: float | None
    spike: int | None

    @property
    def is_ghost(self) -> bool:
        return self.runtime_s is None


@dataclass(frozen=True)
class SpikeWindow:
    index: int
    start_s: float
    end_s: float


def spike_windows(shape: Shape) -> list[SpikeWindow]:
    period = shape.period.total_seconds()
    lead = shape.lead.total_seconds()
    length = shape.spike_length.total_seconds()
    return [
        SpikeWindow(i, lead + i * period, lead + i * period + length) for i in range(shape.spikes)
    ]


def build(shape: Shape, seed: int) -> list[Planned]:
    """Every start of the day, in order of time."""
    if shape.period <= shape.spike_length:
        raise ValueError("the spikes overlap: lengthen the duration or the gap")
    rng = random.Random(seed)
    times: list[tuple[float, int | None]] = []
    for window in spike_windows(shape):
        size = rng.randint(*shape.spike_size)
        times += [(rng.uniform(window.start_s, window.end_s), window.index) for _ in range(size)]
    # The quiet trickle, a Poisson stream, everywhere but inside the spikes.
    windows = spike_windows(shape)
    rate_per_s = shape.trickle_per_min / 60
    at = 0.0
    end = shape.total.total_seconds()
    while rate_per_s > 0:
        at += rng.expovariate(rate_per_s)
        if at >= end:
            break
        if not any(w.start_s <= at < w.end_s for w in windows):
            times.append((at, None))
    times.sort(key=lambda entry: entry[0])
    planned = []
    for serial, (at_s, spike) in enumerate(times):
        ghost = rng.random() < shape.ghost_share
        runtime = None if ghost else round(rng.uniform(*shape.runtime_s), 1)
        planned.append(Planned(serial, round(at_s, 3), runtime, spike))
    return planned
