"""The unused prune in the schedule: opt-in, routed to its host's queue like the others."""

from __future__ import annotations

from janitor import schedule
from janitor.model import Task
from janitor.settings import Settings

HOSTS = "alpha=unix:///run/a.sock,beta=unix:///run/b.sock"


def test_beat_schedules_the_prune_only_when_its_interval_is_set() -> None:
    off = schedule.beat_schedule(Settings(hosts=HOSTS))  # type: ignore[arg-type]
    assert not [name for name in off if name.startswith("prune-unused")]
    on = schedule.beat_schedule(Settings(hosts=HOSTS, prune_interval="15m"))  # type: ignore[arg-type]
    entry = on["prune-unused:beta"]
    assert entry["task"] == "janitor.prune_unused"
    assert entry["schedule"] == 900
    assert entry["options"] == {"queue": "janitor.beta", "expires": 810}


def test_a_prune_on_request_has_time_limits_while_it_is_off() -> None:
    limits = schedule.time_limits(Settings(hosts=HOSTS), Task.PRUNE_UNUSED)  # type: ignore[arg-type]
    assert limits.interval.total_seconds() == 3600
    assert "janitor.prune_unused" in schedule.task_annotations(Settings(hosts=HOSTS))  # type: ignore[arg-type]
