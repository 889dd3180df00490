"""The replay benchmark's pure parts: the day it replays is the same for every variant, has the
shape it claims, and its medians never flatter a spike that was never cleared."""

from __future__ import annotations

from datetime import timedelta

from bench.replay.figures import median_over_spikes, starts_per_second
from bench.replay.replayer import Start
from bench.replay.schedule import Planned, Shape, build, spike_windows


def test_the_day_is_the_same_for_the_same_seed_and_another_for_another() -> None:
    shape = Shape()
    assert build(shape, 13) == build(shape, 13)
    assert build(shape, 13) != build(shape, 14)


def test_the_full_day_has_its_spikes_gaps_trickle_and_ghosts() -> None:
    shape = Shape()
    day = build(shape, 13)
    assert shape.total >= timedelta(minutes=20)
    assert shape.period - shape.spike_length >= timedelta(minutes=2)
    windows = spike_windows(shape)
    assert len(windows) == shape.spikes
    for window in windows:
        mine = [p for p in day if p.spike == window.index]
        assert 200 <= len(mine) <= 300
        assert all(window.start_s <= p.at_s <= window.end_s for p in mine)
        assert window.end_s - window.start_s <= 60
    trickle = [p for p in day if p.spike is None]
    assert trickle
    assert not any(w.start_s <= p.at_s < w.end_s for p in trickle for w in windows)
    ghosts = sum(p.is_ghost for p in day)
    assert 0.01 * len(day) < ghosts < 0.06 * len(day)
    assert [p.at_s for p in day] == sorted(p.at_s for p in day)


def test_a_gap_sets_the_day_and_the_quick_day_is_short() -> None:
    shape = Shape(spikes=3, gap=timedelta(seconds=90))
    assert shape.total == timedelta(seconds=30 + 3 * (45 + 90))
    assert Shape.quick().total <= timedelta(minutes=1)


def test_a_median_of_spikes_never_cleared_is_never() -> None:
    assert median_over_spikes([4.0, None]) is None
    assert median_over_spikes([4.0, 6.0, None]) == 6.0
    assert median_over_spikes([1.0, 3.0, 2.0, 4.0]) == 2.5
    assert median_over_spikes([]) is None


def test_starts_count_in_the_second_they_returned_and_failures_not_at_all() -> None:
    planned = Planned(0, 0.0, 1.0, 0)
    starts = [
        Start(planned, "a", began_s=0.2, latency_s=0.5),
        Start(planned, "b", began_s=0.9, latency_s=0.5),
        Start(planned, "", began_s=0.1, latency_s=0.1, error="boom"),
    ]
    assert starts_per_second(starts, 3) == [1, 1, 0]
