"""Pacing's pure decisions: defer or run, pressure hysteresis, tightened graces."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from janitor import pressure
from janitor.pacing import Pace, is_under_pressure, pace, tightened
from janitor.settings import load_settings


@pytest.mark.parametrize(
    ("spiking", "deferred_for", "expected"),
    [
        (False, None, Pace.RUN),
        (True, None, Pace.DEFER),
        (True, timedelta(minutes=9), Pace.DEFER),
        (True, timedelta(minutes=10), Pace.FORCE),
        (False, timedelta(hours=1), Pace.RUN),  # the spike ended: run at full speed
    ],
)
def test_pace(spiking: bool, deferred_for: timedelta | None, expected: Pace) -> None:
    assert pace(spiking, deferred_for, timedelta(minutes=10)) is expected


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
