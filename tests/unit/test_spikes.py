"""The spike detector on synthetic series of start times: what is a spike, how soon it is seen
and how soon its end is, and what the hysteresis keeps from flapping."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from janitor.spikes import MAX_KEPT, STAY_WINDOW, WINDOW, SpikeDetector, Thresholds

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
STEP = timedelta(milliseconds=50)


def every(period: timedelta, count: int, start: datetime = T0) -> list[datetime]:
    return [start + period * n for n in range(count)]


def run(rate: int, starts: Iterable[datetime], until: datetime) -> list[tuple[datetime, bool]]:
    """The detector's answer every STEP from T0 to `until`, fed each start when it happens."""
    detector = SpikeDetector(rate)
    pending = sorted(starts)
    answers = []
    now = T0
    while now <= until:
        while pending and pending[0] <= now:
            detector.add(pending.pop(0))
        answers.append((now, detector.view(now).spiking))
        now += STEP
    return answers


def first_on(answers: list[tuple[datetime, bool]]) -> datetime | None:
    return next((at for at, on in answers if on), None)


def transitions(answers: list[tuple[datetime, bool]]) -> int:
    return sum(1 for (_, a), (_, b) in itertools.pairwise(answers) if a != b)


@pytest.mark.parametrize(
    ("rate", "on", "stay_on"),
    [(60, 4, 2), (6, 3, 1), (1, 3, 1), (120, 7, 4), (1000, 51, 33)],
)
def test_thresholds_from_the_rate(rate: int, on: int, stay_on: int) -> None:
    assert Thresholds.for_rate(rate) == Thresholds(on=on, stay_on=stay_on)


def test_two_starts_are_never_a_spike() -> None:
    # Even at the lowest rate, and even at the same instant.
    for rate in (1, 6, 60):
        assert first_on(run(rate, [T0, T0], T0 + timedelta(seconds=10))) is None


@pytest.mark.parametrize("per_minute", [30, 50, 59, 60])
def test_a_steady_trickle_at_or_below_the_rate_is_never_a_spike(per_minute: int) -> None:
    starts = every(timedelta(minutes=1) / per_minute, per_minute * 3)
    assert first_on(run(60, starts, T0 + timedelta(minutes=3))) is None


@pytest.mark.parametrize("per_second", [3, 4, 5])
def test_a_burst_of_the_benchs_shape_is_seen_within_two_seconds(per_second: int) -> None:
    starts = every(timedelta(seconds=1) / per_second, per_second * 60)
    seen = first_on(run(60, starts, T0 + timedelta(seconds=10)))
    assert seen is not None
    assert seen - T0 <= timedelta(seconds=2)


def test_the_gap_is_seen_within_five_seconds_of_the_last_start() -> None:
    starts = every(timedelta(milliseconds=250), 40)  # 4/s for 10 s
    answers = run(60, starts, T0 + timedelta(seconds=30))
    last = max(starts)
    off = next(at for at, on in answers if at > last and not on)
    assert off - last <= timedelta(seconds=5)
    assert off - last <= STAY_WINDOW  # the bound the README gives
    assert not any(on for at, on in answers if at >= off), "and it stays off"


def test_a_spike_that_stalls_for_three_seconds_stays_on() -> None:
    # A loaded daemon stalls its starts for a moment: that is not the gap.
    starts = every(timedelta(milliseconds=500), 10)
    starts += every(timedelta(milliseconds=500), 10, start=max(starts) + timedelta(seconds=3))
    assert transitions(run(60, starts, max(starts) + timedelta(seconds=10))) == 2


def test_the_hysteresis_keeps_a_spike_that_dips_from_flapping() -> None:
    # A burst, then starts coming at 0.9x the rate with jitter: a plain threshold at the rate
    # would go off and on with every bunch; the spike stays on until it really thins out.
    burst = every(timedelta(milliseconds=250), 12)
    dips = [
        T0 + timedelta(seconds=3) + timedelta(seconds=1.1) * n + timedelta(seconds=0.3 * (n % 2))
        for n in range(30)
    ]
    answers = run(60, burst + dips, max(dips) + timedelta(seconds=10))
    assert transitions(answers) == 2, "on once, off once"


def test_bunches_below_the_rate_do_not_flap() -> None:
    # Three starts together every 4 s: 45 a minute, bunched like a compose project's.
    starts = [
        T0 + timedelta(seconds=4) * n + timedelta(milliseconds=100 * k)
        for n in range(20)
        for k in range(3)
    ]
    assert first_on(run(60, starts, T0 + timedelta(seconds=90))) is None


def test_the_record_is_bounded_and_forgets_on_reset() -> None:
    detector = SpikeDetector(60)
    for n in range(MAX_KEPT + 500):
        detector.add(T0 + timedelta(microseconds=n))
    view = detector.view(T0 + timedelta(seconds=1))
    assert view.spiking
    assert view.rate_per_min == MAX_KEPT * 60 / WINDOW.total_seconds()
    detector.reset()
    assert not detector.view(T0 + timedelta(seconds=1)).spiking


def test_a_start_replayed_out_of_order_counts_where_it_belongs() -> None:
    detector = SpikeDetector(60)
    for at in (
        T0,
        T0 + timedelta(seconds=1),
        T0 - timedelta(seconds=10),
        T0 + timedelta(seconds=1.5),
    ):
        detector.add(at)
    view = detector.view(T0 + timedelta(seconds=1.5))
    assert not view.spiking, "the old start is outside the window"
    detector.add(T0 + timedelta(seconds=1.6))
    view = detector.view(T0 + timedelta(seconds=1.6))
    assert view.spiking
    assert view.began_at == T0
    assert view.since == T0 + timedelta(seconds=1.6)


@given(st.lists(st.floats(min_value=0, max_value=60), max_size=2), st.integers(1, 600))
def test_fewer_than_three_starts_are_never_a_spike_whatever_the_rate(
    offsets: list[float], rate: int
) -> None:
    detector = SpikeDetector(rate)
    for offset in sorted(offsets):
        at = T0 + timedelta(seconds=offset)
        detector.add(at)
        assert not detector.view(at).spiking
