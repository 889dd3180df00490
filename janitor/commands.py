"""What `janitor sweep`, `janitor status` and `janitor run` do once their arguments are parsed.

Imported only when one of them runs (see `cli`): this is where Redis, pydantic and structlog
come in; the sweep's engine and the Docker SDK only when `sweep` runs (`status` reads Redis
alone, `run` starts child processes).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TextIO

import redis

from janitor import fleet, logs
from janitor.cli_words import ALL_TASKS, EXIT_FAILED, EXIT_OK, TASKS
from janitor.locks import REDIS_ERRORS
from janitor.model import Outcome, Status, SweepNotRun, SweepReport, Task
from janitor.redisconn import redis_client
from janitor.settings import Settings, load_settings

# Enough to see what a sweep did at a glance; --json has every action.
SHOWN_ACTIONS = 20


def redis_or_none(settings: Settings, *, quiet: bool = False) -> redis.Redis[bytes] | None:
    client = redis_client(settings, connect_timeout=1, timeout=3)
    try:
        client.ping()
    except REDIS_ERRORS as exc:
        client.close()
        if not quiet:
            print(
                f"janitor: Redis not reachable at {settings.redis_url_redacted} ({exc}); "
                "sweeping without a lease",
                file=sys.stderr,
            )
        return None
    return client


def sweep(args: argparse.Namespace) -> int:
    from janitor.tick import sweep_host

    overrides = {"dry_run": True} if args.dry_run else {}
    settings = load_settings(**overrides)
    logs.configure(settings.log_format, settings.log_level, stream=sys.stderr)
    names = list(dict.fromkeys(args.hosts or [h.name for h in settings.hosts]))
    for name in names:
        settings.host(name)  # an unknown name is a configuration error before any sweep
    tasks = tuple(Task(name) for name in (TASKS if args.task == ALL_TASKS else (args.task,)))
    if args.task == ALL_TASKS and not settings.prunes:
        # Opt-in: an upgrade must not start deleting images or volumes on its own.
        tasks = tuple(task for task in tasks if task is not Task.PRUNE_UNUSED)
    client = redis_or_none(settings)

    def sweep_one_host(name: str) -> list[SweepReport]:
        reports = []
        for task in tasks:
            outcome = sweep_host(settings, name, task, redis_client=client)
            if isinstance(outcome, SweepNotRun):
                print(f"janitor: {name} {task.value}: skipped ({outcome.why})", file=sys.stderr)
            else:
                reports.append(outcome)
        return reports

    try:
        # Hosts are independent daemons: sweeping them side by side keeps the total near
        # the slowest host's time instead of the sum.
        with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="host") as pool:
            reports = [r for per_host in pool.map(sweep_one_host, names) for r in per_host]
    finally:
        if client is not None:
            client.close()
    if args.json:
        json.dump([r.to_dict() for r in reports], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_table(reports, sys.stdout)
    swept = all(report.status is Status.OK for report in reports)
    return EXIT_OK if swept else EXIT_FAILED


def _print_table(reports: Sequence[SweepReport], out: TextIO) -> None:
    outcomes = [o.value for o in Outcome]
    header = ["HOST", "TASK", "STATUS", "SCANNED", *[o.upper() for o in outcomes], "SECONDS"]
    rows = [
        [
            r.host,
            r.task.value,
            r.status.value + (" (dry run)" if r.dry_run else ""),
            str(r.scanned),
            *[str(r.counts.get(o, 0)) for o in outcomes],
            f"{r.duration_s:.2f}",
        ]
        for r in reports
    ]
    print_rows([header, *rows], out)
    for report in reports:
        if report.error:
            print(f"\n{report.host} {report.task.value} failed: {report.error}", file=out)
        if report.status is Status.ABORTED:
            print(
                f"\n{report.host} {report.task.value} aborted: {len(report.results)} eligible "
                "is over JANITOR_MAX_ACTIONS; nothing was changed",
                file=out,
            )
        shown = [r for r in report.results if r.outcome is not Outcome.REFUSED or r.detail]
        if not shown:
            continue
        print(f"\n{report.host} {report.task.value}:", file=out)
        for result in shown[:SHOWN_ACTIONS]:
            action = result.action
            detail = f" ({result.detail})" if result.detail else ""
            print(
                f"  {action.verb.value:<6} {action.container_id[:12]}  {action.name:<24} "
                f"{action.reason.value:<22} {result.outcome.value}{detail}",
                file=out,
            )
        if len(shown) > SHOWN_ACTIONS:
            print(f"  ... and {len(shown) - SHOWN_ACTIONS} more (--json lists all)", file=out)


def status(args: argparse.Namespace) -> int:
    settings = load_settings()
    client = redis_or_none(settings, quiet=True)
    if client is None:
        print(f"janitor: Redis not reachable at {settings.redis_url_redacted}", file=sys.stderr)
        return EXIT_FAILED
    try:
        now, rows = fleet.fleet_status(settings, client)
    finally:
        client.close()
    healthy = all(row.healthy for row in rows if row.configured)
    if args.json:
        document = {
            "ok": healthy,
            "redis_time": now.isoformat().replace("+00:00", "Z"),
            "sweeps": [row.to_dict() for row in rows],
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_rows(fleet.status_table(rows, now), sys.stdout)
    return EXIT_OK if healthy else EXIT_FAILED


def print_rows(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def run(args: argparse.Namespace) -> int:
    del args
    from janitor import service

    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level, stream=sys.stderr)
    return service.run(settings)
