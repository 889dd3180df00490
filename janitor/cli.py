"""The `janitor` command: sweep now, check the configuration, run the service."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from importlib import metadata
from typing import TextIO

import redis

from janitor import fleet, keys, logs, pressure
from janitor.dockerhost import DaemonInfo, DockerHost
from janitor.errors import ConfigError, HostError
from janitor.locks import REDIS_ERRORS
from janitor.model import HostConfig, Outcome, Status, SweepNotRun, SweepReport, Task
from janitor.redisconn import redis_client
from janitor.settings import Settings, load_settings
from janitor.tick import sweep_host
from janitor.vocabulary import format_duration

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DISTRIBUTION = "container-janitor"
TASK_CHOICES: dict[str, tuple[Task, ...]] = {
    "kill-ghosts": (Task.KILL_GHOSTS,),
    "remove-stopped": (Task.REMOVE_STOPPED,),
    "prune-unused": (Task.PRUNE_UNUSED,),
    # Ghosts first: a ghost killed now is a stopped container for a later sweep, whose
    # removal leaves its image and volumes unused for a later prune.
    "all": (Task.KILL_GHOSTS, Task.REMOVE_STOPPED, Task.PRUNE_UNUSED),
}
# Enough to see what a sweep did at a glance; --json has every action.
SHOWN_ACTIONS = 20


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"janitor: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="janitor",
        description="Kill ghost containers and remove stopped ones on Docker hosts.",
        epilog="Configuration comes from JANITOR_* environment variables; see the README.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {metadata.version(DISTRIBUTION)}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sweep = commands.add_parser("sweep", help="sweep now, in this process, without a broker")
    sweep.add_argument("--task", choices=sorted(TASK_CHOICES), default="all")
    sweep.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help="a host of JANITOR_HOSTS (repeatable; default: every configured host)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    sweep.add_argument("--json", action="store_true", help="print a JSON array of reports only")
    sweep.set_defaults(handler=_sweep)

    check = commands.add_parser("check", help="validate the config, reach Redis and every host")
    check.add_argument("--json", action="store_true", help="print one JSON object of checks")
    check.set_defaults(handler=_check)

    status = commands.add_parser(
        "status", help="the fleet at a glance, from Redis: every host's last sweeps"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(handler=_status)

    run = commands.add_parser(
        "run", help="worker + embedded beat + Flower on this machine (starts Redis if needed)"
    )
    run.set_defaults(handler=_run)

    return parser


def _redis_or_none(settings: Settings, *, quiet: bool = False) -> redis.Redis[bytes] | None:
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


def _sweep(args: argparse.Namespace) -> int:
    overrides = {"dry_run": True} if args.dry_run else {}
    settings = load_settings(**overrides)
    logs.configure(settings.log_format, settings.log_level, stream=sys.stderr)
    names = list(dict.fromkeys(args.hosts or [h.name for h in settings.hosts]))
    for name in names:
        settings.host(name)  # an unknown name is a configuration error before any sweep
    tasks = TASK_CHOICES[args.task]
    if args.task == "all" and not settings.prunes:
        # Opt-in: an upgrade must not start deleting images or volumes on its own.
        tasks = tuple(task for task in tasks if task is not Task.PRUNE_UNUSED)
    client = _redis_or_none(settings)

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
    _print_rows([header, *rows], out)
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


def _status(args: argparse.Namespace) -> int:
    settings = load_settings()
    client = _redis_or_none(settings, quiet=True)
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
        _print_rows(fleet.status_table(rows, now), sys.stdout)
    return EXIT_OK if healthy else EXIT_FAILED


def _print_rows(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)


def _run(args: argparse.Namespace) -> int:
    del args
    from janitor import service

    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level, stream=sys.stderr)
    return service.run(settings)


@dataclass(frozen=True, slots=True)
class Check:
    """One line of `janitor check`: what was checked, whether it passed, and what was seen."""

    subject: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.subject}: {self.message}"


def _check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        checks = [Check("configuration", False, line) for line in str(exc).splitlines()]
        _print_checks(checks, as_json=args.json)
        return EXIT_CONFIG
    checks = [_check_configuration(settings)]
    started = time.monotonic()
    client = _redis_or_none(settings, quiet=True)
    redis_subject = f"redis {settings.redis_url_redacted}"
    if client is None:
        checks.append(Check(redis_subject, False, "not reachable"))
    else:
        ping_ms = (time.monotonic() - started) * 1000
        checks.append(Check(redis_subject, True, f"PING in {ping_ms:.1f} ms"))
    try:
        for config in settings.hosts:
            checks += _check_host(settings, config.name, client)
    finally:
        if client is not None:
            client.close()
    _print_checks(checks, as_json=args.json)
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED


def _print_checks(checks: Sequence[Check], *, as_json: bool) -> None:
    if as_json:
        document = {
            "ok": all(check.ok for check in checks),
            "checks": [{"subject": c.subject, "ok": c.ok, "message": c.message} for c in checks],
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for check in checks:
        print(check.line())


def _check_configuration(settings: Settings) -> Check:
    return Check(
        "configuration",
        True,
        f"{len(settings.hosts)} host(s) ({', '.join(h.name for h in settings.hosts)}), "
        f"selector {settings.selector}, max runtime {format_duration(settings.max_runtime)}, "
        f"stopped grace {format_duration(settings.stopped_grace)}, "
        f"dry run {'on' if settings.dry_run else 'off'}",
    )


def _check_host(settings: Settings, name: str, client: redis.Redis[bytes] | None) -> list[Check]:
    config = settings.host(name)
    subject = f"host {name} {config.url}"
    with DockerHost(config, timeout=settings.docker_timeout) as docker:
        try:
            info = docker.info()
            managed = len(docker.list_containers(settings.selector))
        except HostError as exc:
            return [Check(subject, False, str(exc))]
        events = _check_events(settings, docker, info)
    daemon = _check_daemon(
        subject, info, managed, settings, client=client, name=name, events=events
    )
    return [daemon, *_check_docker_root(settings, config, info)]


def _check_docker_root(settings: Settings, config: HostConfig, info: DaemonInfo) -> list[Check]:
    """Whether a percentage disk budget can be measured here; no line when none is set."""
    budget = settings.image_disk_budget
    if budget is None or budget.share is None:
        return []
    subject = f"docker root of {config.name}"
    root = pressure.docker_root(settings.docker_root, config, info.docker_root)
    if root is None:
        why = (
            "a tcp host's filesystem is not visible here"
            if config.is_tcp
            else f"the daemon's DockerRootDir {info.docker_root or '(none)'} is not one here"
        )
        return [
            Check(
                subject,
                False,
                f"JANITOR_IMAGE_DISK_BUDGET={budget} cannot be measured: {why}; set "
                "JANITOR_DOCKER_ROOT or give a size",
            )
        ]
    try:
        capacity = pressure.read_disk(root).capacity
    except OSError as exc:
        return [Check(subject, False, f"{root}: {exc}")]
    allowed = budget.bytes_of(capacity) or 0
    return [Check(subject, True, f"{root}: {capacity} bytes, image budget {allowed} bytes")]


def _check_daemon(
    subject: str,
    info: DaemonInfo,
    managed: int,
    settings: Settings,
    *,
    client: redis.Redis[bytes] | None,
    name: str,
    events: tuple[bool, str],
) -> Check:
    events_ok, events_seen = events
    skew = info.now.timestamp() - time.time()
    message = (
        f"{info.engine}, daemon {info.id}, "
        f"{managed} container(s) under selector {settings.selector}, "
        f"clock {skew:+.1f}s from this machine, {events_seen}"
    )
    recorded = client.get(keys.daemon_identity(name)) if client is not None else None
    if recorded is not None and recorded.decode() != info.id:
        message += f": Redis recorded daemon {recorded.decode()} for this name before"
        return Check(subject, False, message)
    return Check(subject, events_ok, message)


# How far back `janitor check` reads the daemon's event buffer for starts.
EVENTS_CHECKED = timedelta(minutes=1)


def _check_events(settings: Settings, docker: DockerHost, info: DaemonInfo) -> tuple[bool, str]:
    """Whether the events API can serve spike pacing; a failure fails the check only when
    pacing is on (JANITOR_SPIKE_RATE)."""
    try:
        starts = docker.starts_between(info.now - EVENTS_CHECKED, info.now)
    except HostError as exc:
        pacing = "on: it cannot see starts" if settings.spike_rate else "off"
        return not settings.spike_rate, f"WARNING events unreadable, spike pacing {pacing} ({exc})"
    seen = f"events readable ({len(starts)} start(s) in the last minute)"
    if info.engine.is_podman:
        # Podman 4.3 ignores the `event` filter; starts_between filters on our side.
        seen += ", filtered by the janitor"
    return True, seen


if __name__ == "__main__":
    sys.exit(main())
