"""The fleet's records in Redis, and the status read from them: the last report of each
(host, task) written by service sweeps, and a mark per host that a worker serving its queue
is alive. `janitor status` and the beat's withholding of ticks read these, nothing else.

Every instant here is on Redis's clock (TIME), the one clock every worker and every CLI of a
fleet shares, so a host whose daemon clock is off does not look fresh or stale for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis

from janitor import keys
from janitor.model import Task
from janitor.settings import Settings
from janitor.vocabulary import milliseconds

LIVE_WORKER_TTL = timedelta(seconds=30)
LIVE_WORKER_REFRESH = LIVE_WORKER_TTL / 3
# A sweep is stale once it has missed this many intervals.
STALE_AFTER_INTERVALS = 3
# kombu keeps a queue's messages of priority 0 under its name and the others under the name
# plus this separator and the priority step.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def redis_now(client: redis.Redis[bytes]) -> datetime:
    seconds, microseconds = client.time()
    return datetime.fromtimestamp(seconds + microseconds / 1e6, UTC)


def record_report(
    client: redis.Redis[bytes], result: Mapping[str, object], *, ok: bool, ttl: timedelta
) -> None:
    """Keep a service sweep's stored result as its (host, task)'s last report, for `ttl`."""
    key = keys.last_report(str(result["host"]), str(result["task"]))
    at = redis_now(client).isoformat()
    fields: dict[str | bytes, str] = {"report": json.dumps(result), "ran_at": at}
    if ok:
        fields["succeeded_at"] = at
    pipeline = client.pipeline(transaction=True)
    pipeline.hset(key, mapping=fields)
    pipeline.pexpire(key, milliseconds(ttl))
    pipeline.execute()


def mark_worker_alive(client: redis.Redis[bytes], hosts: Sequence[str], worker: str) -> None:
    pipeline = client.pipeline(transaction=False)
    for host in hosts:
        pipeline.set(keys.live_worker(host), worker, px=milliseconds(LIVE_WORKER_TTL))
    pipeline.execute()


def unmark_worker(client: redis.Redis[bytes], hosts: Sequence[str], worker: str) -> None:
    """Forget the marks this worker set (another worker of the same host may own them now)."""
    for host in hosts:
        key = keys.live_worker(host)
        if client.get(key) == worker.encode():
            client.delete(key)


def live_worker(client: redis.Redis[bytes], host: str) -> str | None:
    raw = client.get(keys.live_worker(host))
    return raw.decode() if raw is not None else None


@dataclass(frozen=True, slots=True)
class SweepStatus:
    """One line of `janitor status`: a (host, task) as the fleet's records show it."""

    host: str
    task: str
    configured: bool
    status: str  # the last report's status, or "never"
    last_run: datetime | None
    last_success: datetime | None
    counts: Mapping[str, int] = field(default_factory=dict)
    live_worker: str | None = None
    queue_length: int = 0
    healthy: bool = False
    why: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "task": self.task,
            "configured": self.configured,
            "healthy": self.healthy,
            "why": self.why,
            "status": self.status,
            "last_run": _iso(self.last_run),
            "last_success": _iso(self.last_success),
            "counts": dict(self.counts),
            "live_worker": self.live_worker,
            "queue_length": self.queue_length,
        }


def fleet_status(
    settings: Settings, client: redis.Redis[bytes]
) -> tuple[datetime, list[SweepStatus]]:
    """Redis's clock and every (host, task) that is configured here or has a last report."""
    now = redis_now(client)
    configured = {host.name for host in settings.hosts}
    # The unused prune is expected only where it is turned on; a prune run on request still
    # shows through its last report.
    expected = [t for t in Task if t is not Task.PRUNE_UNUSED or settings.prunes]
    pairs = {(host, task.value) for host in configured for task in expected}
    for raw in client.scan_iter(match=keys.LAST_REPORT_PREFIX + "*", count=1000):
        host, _, task = raw.decode().removeprefix(keys.LAST_REPORT_PREFIX).partition(":")
        pairs.add((host, task))
    return now, [
        _status_of(
            settings, client=client, host=host, task=task, configured=host in configured, now=now
        )
        for host, task in sorted(pairs)
    ]


def _status_of(
    settings: Settings,
    *,
    client: redis.Redis[bytes],
    host: str,
    task: str,
    configured: bool,
    now: datetime,
) -> SweepStatus:
    pipeline = client.pipeline(transaction=False)
    pipeline.hgetall(keys.last_report(host, task))
    pipeline.get(keys.live_worker(host))
    for suffix in _PRIORITY_SUFFIXES:
        pipeline.llen(f"janitor.{host}{suffix}")
    record, worker, *lengths = pipeline.execute()
    report = json.loads(record[b"report"]) if b"report" in record else {}
    last_run = _instant(record.get(b"ran_at"))
    last_success = _instant(record.get(b"succeeded_at"))
    status = str(report.get("status", "never"))
    allowed = settings.interval(task) * STALE_AFTER_INTERVALS
    if last_run is None:
        why = "never swept (or not within JANITOR_RESULT_TTL)"
    elif status != "ok":
        why = f"last sweep {status}" + (f": {report['error']}" if report.get("error") else "")
    elif last_success is None or now - last_success > allowed:
        why = f"no successful sweep for {STALE_AFTER_INTERVALS} intervals"
    else:
        why = ""
    return SweepStatus(
        host=host,
        task=task,
        configured=configured,
        status=status,
        last_run=last_run,
        last_success=last_success,
        counts=report.get("counts", {}),
        live_worker=worker.decode() if worker is not None else None,
        queue_length=sum(lengths),
        healthy=not why,
        why=why,
    )


def _instant(raw: bytes | None) -> datetime | None:
    return datetime.fromisoformat(raw.decode()) if raw is not None else None


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat().replace("+00:00", "Z") if instant is not None else None


def status_table(rows: Sequence[SweepStatus], now: datetime) -> list[list[str]]:
    """The lines of `janitor status`: a header, then one row per (host, task)."""
    header = ["HOST", "TASK", "HEALTH", "STATUS", "LAST RUN", "LAST OK", "COUNTS", "WORKER",
              "QUEUE", "WHY"]  # fmt: skip
    lines = [header]
    for row in rows:
        counts = ",".join(f"{k}={v}" for k, v in sorted(row.counts.items())) or "-"
        health = "ok" if row.healthy else "STALE" if row.status == "ok" else "FAIL"
        lines.append([
            row.host + ("" if row.configured else " (not configured here)"),
            row.task,
            health,
            row.status,
            _ago(row.last_run, now),
            _ago(row.last_success, now),
            counts,
            row.live_worker or "NONE",
            str(row.queue_length),
            row.why,
        ])  # fmt: skip
    return lines


def _ago(instant: datetime | None, now: datetime) -> str:
    if instant is None:
        return "never"
    return f"{max(0, round((now - instant).total_seconds()))}s ago"
