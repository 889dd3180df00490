"""The fleet's records and what is read from them: bounded stored results, the last-report
and live-worker keys, `janitor status`, beat withholding ticks nobody would take, owner leases
after the Redis master changed, and the Sentinel form of JANITOR_REDIS_URL.

Against a real private Redis (the `redis_url` fixture) and the fake host where a sweep runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery import beat
from structlog.testing import capture_logs
from support.fakehost import NOW, FakeHost, container, emitted, settings_for

from janitor import celery_app, cli, failover, fleet, keys, tasks, tick
from janitor.config_syntax import parse_sentinel_url
from janitor.errors import ConfigError, LeasesUnknownError
from janitor.model import (
    Action,
    ActionResult,
    Outcome,
    Reason,
    State,
    Status,
    SweepReport,
    Task,
    Verb,
)
from janitor.redisconn import celery_redis
from janitor.settings import Settings, load_settings

CLOSED_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url, socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def unreachable() -> Iterator[redis.Redis[bytes]]:
    client: redis.Redis[bytes] = redis.Redis.from_url(
        CLOSED_REDIS, socket_connect_timeout=0.2, socket_timeout=0.2
    )
    yield client
    client.close()


def _result(name: str, outcome: Outcome, detail: str = "") -> ActionResult:
    action = Action((name.encode().hex() * 64)[:64], name, Verb.REMOVE, Reason.EXITED_PAST_GRACE)
    return ActionResult(action, outcome, detail)


def _report(results: tuple[ActionResult, ...] = (), status: Status = Status.OK) -> SweepReport:
    return SweepReport(Task.REMOVE_STOPPED, "alpha", False, status, NOW, 3, 0.5, results)


# -- bounded stored results -----------------------------------------------------------------


def test_a_stored_result_leaves_out_done_actions_beyond_the_bound_and_counts_them() -> None:
    results = (
        *[_result(f"done-{i}", Outcome.DONE) for i in range(5)],
        _result("raced", Outcome.GONE, "no_longer_eligible"),
        _result("broken", Outcome.FAILED, "daemon said no"),
    )
    stored = _report(results).to_dict(max_done=2)
    assert stored["counts"] == {"done": 5, "gone": 1, "failed": 1}, "counts are always whole"
    assert stored["actions_omitted"] == 3
    actions: list[dict[str, str]] = stored["actions"]  # type: ignore[assignment]
    assert [a["name"] for a in actions] == ["done-0", "done-1", "raced", "broken"]
    assert [a["detail"] for a in actions[2:]] == ["no_longer_eligible", "daemon said no"]
    assert list(stored).index("counts") < list(stored).index("actions_omitted")
    assert list(stored).index("actions_omitted") < list(stored).index("actions")


def test_the_whole_report_never_omits_anything() -> None:
    whole = _report(tuple(_result(f"done-{i}", Outcome.DONE) for i in range(500))).to_dict()
    assert "actions_omitted" not in whole
    assert len(whole["actions"]) == 500  # type: ignore[arg-type]
    within = _report((_result("one", Outcome.DONE),)).to_dict(max_done=2)
    assert "actions_omitted" not in within


# -- records and status ---------------------------------------------------------------------


def _settings(*hosts: str, **overrides: Any) -> Settings:
    return Settings(hosts=",".join(f"{h}=unix:///run/{h}.sock" for h in hosts), **overrides)


def _record(client: redis.Redis[bytes], host: str, task: str, status: str = "ok") -> None:
    result = {"task": task, "host": host, "status": status, "counts": {"done": 2}}
    fleet.record_report(client, result, ok=status == "ok", ttl=timedelta(hours=1))


def _age(client: redis.Redis[bytes], host: str, task: str, by: timedelta) -> None:
    key = keys.last_report(host, task)
    for field in (b"ran_at", b"succeeded_at"):
        raw = client.hget(key, field)
        if raw is not None:
            earlier = fleet.datetime.fromisoformat(raw.decode()) - by
            client.hset(key, field, earlier.isoformat())


def test_status_reads_fresh_stale_failing_and_unswept_sweeps(client: redis.Redis[bytes]) -> None:
    settings = _settings("fresh", "stale", "failing", "unswept", kill_interval="60s")
    for host in ("fresh", "stale", "failing"):
        _record(client, host, "kill-ghosts")
        _record(client, host, "remove-stopped")
    _age(client, "stale", "kill-ghosts", timedelta(minutes=4))
    _record(client, "failing", "kill-ghosts", status="failed")
    fleet.mark_worker_alive(client, ["fresh"], "w1@fresh")
    client.rpush("janitor.unswept", "tick-1", "tick-2")
    _record(client, "elsewhere", "kill-ghosts", status="failed")

    _, rows = fleet.fleet_status(settings, client)
    by_pair = {(r.host, r.task): r for r in rows}
    fresh = by_pair["fresh", "kill-ghosts"]
    assert fresh.healthy
    assert fresh.status == "ok"
    assert fresh.counts == {"done": 2}
    assert fresh.live_worker == "w1@fresh"
    stale = by_pair["stale", "kill-ghosts"]
    assert not stale.healthy
    assert "3 intervals" in stale.why
    assert by_pair["stale", "remove-stopped"].healthy, "five minutes is within 3 x 5m"
    failing = by_pair["failing", "kill-ghosts"]
    assert not failing.healthy
    assert failing.status == "failed"
    assert failing.last_success is not None, "the earlier success is still shown"
    unswept = by_pair["unswept", "kill-ghosts"]
    assert unswept.status == "never"
    assert unswept.queue_length == 2
    assert unswept.live_worker is None
    assert not by_pair["elsewhere", "kill-ghosts"].configured


def test_janitor_status_exits_1_unless_every_configured_sweep_is_fresh(
    client: redis.Redis[bytes],
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("JANITOR_REDIS_URL", redis_url)
    monkeypatch.setenv("JANITOR_HOSTS", "alpha=unix:///run/a.sock")
    _record(client, "alpha", "kill-ghosts")
    assert cli.main(["status", "--json"]) == 1, "remove-stopped never ran"
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert {row["task"] for row in document["sweeps"]} == {"kill-ghosts", "remove-stopped"}
    _record(client, "alpha", "remove-stopped")
    _record(client, "other", "kill-ghosts", status="failed")
    assert cli.main(["status"]) == 0, "a host configured elsewhere does not count here"
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["HOST", "TASK", "HEALTH"]
    assert "other (not configured here)" in table


def test_janitor_status_without_redis_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JANITOR_REDIS_URL", CLOSED_REDIS)
    assert cli.main(["status"]) == 1
    assert "Redis not reachable" in capsys.readouterr().err


def test_a_service_sweep_records_its_last_report_and_a_dry_run_does_not(
    client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeHost([container("old-exit")])
    monkeypatch.setattr(tick, "DockerHost", lambda config, **_: fake)
    monkeypatch.setattr(tasks, "_redis", lambda: client)
    monkeypatch.setattr(tasks, "cached_settings", lambda: settings_for(fake, dry_run=True))
    tasks.remove_stopped("alpha")
    assert not client.exists(keys.last_report("alpha", "remove-stopped"))
    monkeypatch.setattr(tasks, "cached_settings", lambda: settings_for(fake, result_ttl="2h"))
    result = tasks.remove_stopped("alpha")
    key = keys.last_report("alpha", "remove-stopped")
    assert json.loads(client.hget(key, "report") or b"{}") == result
    assert 0 < client.pttl(key) <= 2 * 3600 * 1000


def test_a_last_report_redis_cannot_take_is_logged_and_the_result_still_returned(
    client: redis.Redis[bytes], unreachable: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeHost([container("old-exit")])
    monkeypatch.setattr(tick, "DockerHost", lambda config, **_: fake)
    monkeypatch.setattr(tasks, "_redis", lambda: client)
    monkeypatch.setattr(tasks, "cached_settings", lambda: settings_for(fake))

    def redis_gone(*args: object, **kwargs: object) -> None:
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(fleet, "record_report", redis_gone)
    with capture_logs() as logs:
        result = tasks.remove_stopped("alpha")
    assert result["status"] == "ok"
    emitted(logs, "last_report_unrecorded", host="alpha", error="Connection refused")


# -- the live-worker mark and the beat ------------------------------------------------------


def test_a_worker_marks_its_hosts_alive_until_it_stops(
    client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(celery_app, "_fleet_redis", lambda: client)
    monkeypatch.setattr(celery_app, "_host_names", lambda: ["alpha", "beta"])
    mark = celery_app._LiveWorkerMark()
    mark.start("w1@test")
    # Written before start returns, that is before the worker logs that it is ready.
    fleet_keys = [keys.live_worker("alpha"), keys.live_worker("beta")]
    assert client.exists(*fleet_keys) == 2
    assert client.get(keys.live_worker("alpha")) == b"w1@test"
    assert 0 < client.pttl(keys.live_worker("beta")) <= fleet.LIVE_WORKER_TTL.total_seconds() * 1000
    mark.stop()
    assert client.exists(*fleet_keys) == 0


def test_a_mark_redis_cannot_take_is_logged(
    unreachable: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(celery_app, "_fleet_redis", lambda: unreachable)
    monkeypatch.setattr(celery_app, "_host_names", lambda: ["alpha"])
    mark = celery_app._LiveWorkerMark()
    with capture_logs() as logs:
        mark.start("w1@test")
        mark.stop()
    assert emitted(logs, "live_worker_unmarked")[0]["log_level"] == "warning"


def test_beat_withholds_the_ticks_of_a_host_no_live_worker_serves(
    client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(celery_app, "_fleet_redis", lambda: client)
    monkeypatch.setattr(
        beat.PersistentScheduler, "apply_entry", lambda self, entry, **_: sent.append(entry.name)
    )
    scheduler = celery_app.FleetScheduler(
        app=celery_app.app, lazy=True, schedule_filename=str(tmp_path / "schedule")
    )

    def entry(host: str) -> beat.ScheduleEntry:
        return beat.ScheduleEntry(
            name=f"kill-ghosts:{host}", task="janitor.kill_ghosts", args=(host,),
            schedule=60, app=celery_app.app,
        )  # fmt: skip

    fleet.mark_worker_alive(client, ["alpha"], "w1@alpha")
    with capture_logs() as logs:
        scheduler.apply_entry(entry("alpha"))
        scheduler.apply_entry(entry("beta"))
    assert sent == ["kill-ghosts:alpha"]
    emitted(logs, "tick_withheld", host="beta", why="no live worker")
    monkeypatch.setattr(celery_app, "_fleet_redis", lambda: redis.Redis.from_url(CLOSED_REDIS))
    scheduler.apply_entry(entry("beta"))
    assert sent[-1] == "kill-ghosts:beta", "without Redis beat sends, and Celery reports it"


# -- owner leases after the master changed ---------------------------------------------------


def test_owner_leases_are_unknown_for_one_lease_ttl_after_the_master_changed(
    client: redis.Redis[bytes],
) -> None:
    ttl = timedelta(seconds=30)
    failover.check_leases_readable(client, ttl)  # first sight: recorded, readable
    client.set(keys.REDIS_MASTER_RUN_ID, "0" * 40)  # what the old master had replicated
    with pytest.raises(LeasesUnknownError, match="master changed"):
        failover.check_leases_readable(client, ttl)
    assert 0 < client.pttl(keys.LEASES_UNKNOWN) <= 30_000
    with pytest.raises(LeasesUnknownError, match="unknown for"):
        failover.check_leases_readable(client, ttl)
    client.delete(keys.LEASES_UNKNOWN)  # one lease TTL later
    failover.check_leases_readable(client, ttl)


def test_a_process_that_saw_another_master_does_not_trust_a_lost_record(
    client: redis.Redis[bytes],
) -> None:
    failover._remembered["run_id"] = "1" * 40
    # The record is gone with the data (a restart without persistence): the process remembers.
    with pytest.raises(LeasesUnknownError):
        failover.check_leases_readable(client, timedelta(seconds=30))


def test_after_a_failover_a_missing_lease_makes_no_ghost_until_one_lease_ttl_passed(
    client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = {"janitor.managed": "true", "janitor.lease": "session-1"}
    fake = FakeHost([container("leased", State.RUNNING, labels=labels)])
    monkeypatch.setattr(tick, "DockerHost", lambda config, **_: fake)
    settings = settings_for(fake, max_runtime="1d", lease_grace="60s")
    client.set(keys.REDIS_MASTER_RUN_ID, "0" * 40)
    with capture_logs() as logs:
        report = tick.sweep_host(settings, "alpha", Task.KILL_GHOSTS, redis_client=client)
    assert isinstance(report, SweepReport)
    assert report.results == ()
    assert "master changed" in emitted(logs, "owner_leases_unchecked", containers=1)[0]["why"]
    assert fake.calls["kill"] == 0
    client.delete(keys.LEASES_UNKNOWN)
    report = tick.sweep_host(settings, "alpha", Task.KILL_GHOSTS, redis_client=client)
    assert isinstance(report, SweepReport)
    assert report.counts == {"done": 1}


def test_a_lost_identity_record_is_recorded_again_never_read_as_another_daemon(
    client: redis.Redis[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes = [FakeHost(daemon_id="A"), FakeHost([container("old-exit")], daemon_id="A")]
    monkeypatch.setattr(tick, "DockerHost", lambda config, **_: fakes.pop(0))
    settings = settings_for(FakeHost())
    tick.sweep_host(settings, "alpha", Task.KILL_GHOSTS, redis_client=client)
    client.delete(keys.daemon_identity("alpha"))  # lost in a failover
    with capture_logs() as logs:
        report = tick.sweep_host(settings, "alpha", Task.REMOVE_STOPPED, redis_client=client)
    assert isinstance(report, SweepReport)
    assert report.status is Status.OK
    emitted(logs, "daemon_recorded", daemon_id="A")
    assert client.get(keys.daemon_identity("alpha")) == b"A"


# -- the Sentinel form of JANITOR_REDIS_URL ---------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_database_and_password() -> None:
    parsed = parse_sentinel_url("sentinel://:s%40cret@10.0.0.1:26379,sentinel-b:26380/2")
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert parsed.db == 2
    assert parsed.password == "s@cret"  # noqa: S105
    assert parse_sentinel_url("sentinel://[::1]:26379").sentinels == (("::1", 26379),)
    for bad in ("sentinel://", "sentinel://host", "sentinel://h:1/x", "sentinel://h:99999/0"):
        with pytest.raises(ValueError, match="must be sentinel://"):
            parse_sentinel_url(bad)


def test_a_sentinel_url_needs_the_master_name_and_gives_celery_its_form(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "sentinel://:pw@127.0.0.1:26379,127.0.0.2:26380/3"
    monkeypatch.setenv("JANITOR_REDIS_URL", url)
    with pytest.raises(ConfigError, match="set JANITOR_REDIS_MASTER") as raised:
        load_settings()
    assert "pw" not in str(raised.value)
    monkeypatch.setenv("JANITOR_REDIS_MASTER", "janitor")
    celery = celery_redis(load_settings())
    assert celery.url == "sentinel://:pw@127.0.0.1:26379/3;sentinel://:pw@127.0.0.2:26380/3"
    assert celery.transport_options == {"master_name": "janitor"}
    monkeypatch.setenv("JANITOR_REDIS_URL", "sentinel://:pw@127.0.0.1/3")
    with pytest.raises(ConfigError, match="sentinel://") as raised:
        load_settings()
    assert "pw@" not in str(raised.value)
