"""`janitor check`: the configuration, Redis and every host, one verdict per line.

Imported only when the command runs (see `cli`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import redis

from janitor import keys, pressure
from janitor.cli_words import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from janitor.commands import redis_or_none
from janitor.dockerhost import DaemonInfo, DockerHost
from janitor.errors import ConfigError, HostError
from janitor.model import HostConfig
from janitor.settings import Settings, load_settings
from janitor.vocabulary import format_duration


@dataclass(frozen=True, slots=True)
class Check:
    """One line of `janitor check`: what was checked, whether it passed, and what was seen."""

    subject: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.subject}: {self.message}"


def check(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        checks = [Check("configuration", False, line) for line in str(exc).splitlines()]
        _print_checks(checks, as_json=args.json)
        return EXIT_CONFIG
    checks = [_check_configuration(settings)]
    started = time.monotonic()
    client = redis_or_none(settings, quiet=True)
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
