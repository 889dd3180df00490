"""Pacing's pure decisions: spawn rate, defer or run, pressure hysteresis, tightened graces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from janitor import pressure
from janitor.pacing import Pace, is_under_pressure, pace, spawn_rate, tightened
from janitor.settings import load_settings

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def starts(count: int, over: timedelta) -> list[datetime]:
    step = over / max(count, 1)
    return [NOW - step * i for i in range(count)]


def test_spawn_rate_over_a_full_minute() -> None:
    assert spawn_rate(starts(30, timedelta(seconds=60)), NOW) == pytest.approx(30.5, abs=1)


def test_spawn_rate_of_a_truncated_burst_is_not_diluted() -> None:
    # The daemon's buffer held only the last 15 s of a 200-a-minute spike.
    assert spawn_rate(starts(50, timedelta(seconds=15)), NOW) == pytest.approx(200, rel=0.1)


def test_a_short_burst_is_spread_over_ten_seconds_at_least() -> None:
    assert spawn_rate(starts(5, timedelta(seconds=1)), NOW) == pytest.approx(30)
    assert spawn_rate([], NOW) == 0


@pytest.mark.parametrize(
    ("rate", "threshold", "deferred_for", "expected"),
    [
        (500, 0, None, Pace.RUN),  # pacing off
        (100, 120, None, Pace.RUN),
        (121, 120, None, Pace.DEFER),
        (121, 120, timedelta(minutes=9), Pace.DEFER),
        (121, 120, timedelta(minutes=10), Pace.FORCE),
        (50, 120, timedelta(hours=1), Pace.RUN),  # the spike ended: run at full speed
    ],
)
def test_pace(rate: float, threshold: int, deferred_for: timedelta | None, expected: Pace) -> None:
    assert pace(rate, threshold, deferred_for, timedelta(minutes=10)) is expected


@pytest.mark.parametrize(
    ("peak", "was_under", "expected"),
    [(0.79, False, False), (0.8, False, True), (0.75, True, True), (0.69, True, False)],
)
def test_pressure_hysteresis(peak: float, was_under: bool, expected: bool) -> None:
    assert is_under_pressure(peak, was_under, 0.8, 0.7) is expected
    assert is_under_pressure(peak, was_under, 0.0, 0.7) is False  # off


def test_tightened_only_shortens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JANITOR_PRESSURE_GRACE_FLOOR", "1m")
    monkeypatch.setenv("JANITOR_CREATED_GRACE", "30s")
    settings = load_settings()
    under = tightened(settings)
    assert under.stopped_grace == timedelta(minutes=1)
    assert under.created_grace == timedelta(seconds=30)
    monkeypatch.setenv("JANITOR_PRESSURE_GRACE_FLOOR", "0s")
    assert tightened(load_settings()).stopped_grace == timedelta(minutes=10)


def test_pressure_reading_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 50 kB\nMemAvailable: 100 kB\n")
    (tmp_path / "stat").write_text("cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    reading = pressure.read(tmp_path, sample_s=0)
    assert reading.memory == pytest.approx(0.9)
    assert reading.cpu == 0  # no time passed between the two identical samples
    assert reading.peak == pytest.approx(0.9)


def test_real_pressure_reading_is_a_share() -> None:
    reading = pressure.read(Path("/proc"), sample_s=0.05)
    assert 0 < reading.memory < 1
    assert 0 <= reading.cpu <= 1
