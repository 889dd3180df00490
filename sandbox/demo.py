"""The demo (`make demo`, `python -m sandbox.demo`): `janitor run` against a throwaway sandbox
dockerd and workload, watched live.

It owns the demo's setup, live view, verdict and teardown; what the janitor decides and does
is the real service's, read back from its JSON log.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from janitor import service
from janitor.children import Child, ChildError, free_port, interrupt_on_signals, json_lines
from janitor.dockerhost import DockerHost
from janitor.errors import ConfigError, ContainerGoneError, HostError
from janitor.model import Container, HostConfig, Selector, State
from janitor.vocabulary import format_duration, parse_duration
from sandbox.daemons import PrivateDaemon
from sandbox.image import ensure_test_image
from sandbox.prerequisites import MissingPackagesError, check_sandbox_packages
from sandbox.workload import Kind, Planted, Shape, Workload

HOST_NAME = "sandbox"
# Short budgets so every rule fires within a minute; the intervals keep each sweep's time
# limits above the slowest Docker call (2 s + 1 s stop), which the settings insist on.
BUDGETS = {
    "max_runtime": "20s",
    "stopped_grace": "10s",
    "created_grace": "15s",
    "kill_interval": "5s",
    "remove_interval": "5s",
    "stop_timeout": "1s",
    "docker_timeout": "2s",
}
TICK = 2.0
# Beyond its budget plus one sweep interval, a container the janitor left alone is a failure;
# the slack absorbs a worker still starting and a sweep delayed by the workload's spikes.
SLACK = timedelta(seconds=10)
SERVICE_STOP_TIMEOUT = 60.0
# Redis, a worker with beat, and Flower: seconds on an idle machine, far more on a loaded one.
SERVICE_START_TIMEOUT = 120.0
FLOWER_TIMEOUT = 3.0
CENSUS_TIMEOUT = timedelta(seconds=5)
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Budgets:
    max_runtime: timedelta
    stopped_grace: timedelta
    created_grace: timedelta
    kill_interval: timedelta
    remove_interval: timedelta

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Budgets:
        return cls(**{name: parse_duration(values[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True, slots=True)
class ActionEvent:
    """One `action_done` line of the service's log: something the janitor really did."""

    container_id: str
    name: str
    action: str
    reason: str
    at: datetime


@dataclass
class ServiceLog:
    """Follows the service's JSON log file and keeps what the janitor did, by container id."""

    path: Path
    killed: dict[str, ActionEvent] = field(default_factory=dict)
    removed: dict[str, ActionEvent] = field(default_factory=dict)
    failed: int = 0
    sweeps: int = 0
    _offset: int = 0

    def poll(self) -> list[ActionEvent]:
        """The actions logged since the last poll (whole lines only)."""
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return []
        # A line still being written waits for the next poll.
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        fresh = []
        # Flower's and the service's own plain-text lines are skipped: they are not the janitor's.
        for event in json_lines(complete.splitlines()):
            if event.get("event") == "sweep_finished":
                self.sweeps += 1
            elif event.get("event") == "action_failed":
                self.failed += 1
            elif event.get("event") == "action_done":
                done = _action_event(event)
                table = self.killed if done.action == "kill" else self.removed
                if done.container_id not in table:
                    table[done.container_id] = done
                    fresh.append(done)
        return fresh


def _action_event(event: Mapping[str, Any]) -> ActionEvent:
    return ActionEvent(
        container_id=str(event.get("container_id", "")),
        name=str(event.get("name", "")),
        action=str(event.get("action", "")),
        reason=str(event.get("reason", "")),
        at=datetime.fromisoformat(str(event.get("timestamp"))),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether the janitor did its job on what the workload planted, in printable lines."""

    lines: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(
    planted: Sequence[Planted],
    present: Mapping[str, Container],
    *,
    killed: Mapping[str, object],
    removed: Mapping[str, object],
    now: datetime,
    budgets: Budgets,
) -> Verdict:
    """Judge the janitor by the sandbox as it is at `now` (the daemon's clock).

    A managed container is overdue once its budget, one sweep interval and SLACK have passed;
    one still there then is a failure. Protected and unmanaged ones must never be touched.
    """
    problems: list[str] = []
    by_kind: dict[Kind, list[Planted]] = {kind: [] for kind in Kind}
    for p in planted:
        by_kind[p.kind].append(p)

    def touched(p: Planted) -> bool:
        return p.id in killed or p.id in removed or p.id not in present

    for p in by_kind[Kind.PROTECTED] + by_kind[Kind.UNMANAGED]:
        if touched(p):
            problems.append(f"{p.name} ({p.kind.value}) was killed or removed")
    for p in planted:
        if p.kind in (Kind.PROTECTED, Kind.UNMANAGED) or p.id not in present:
            continue
        late = _overdue(present[p.id], now, budgets)
        if late is not None:
            problems.append(f"{p.name} not {late[0]}: {late[1]}")

    def count(kind: Kind, done: Mapping[str, object]) -> int:
        return sum(1 for p in by_kind[kind] if p.id in done)

    def alive(kind: Kind) -> str:
        return f"{sum(1 for p in by_kind[kind] if not touched(p))}/{len(by_kind[kind])}"

    lines = (
        f"ghosts:         planted {len(by_kind[Kind.GHOST])}, killed {count(Kind.GHOST, killed)}",
        f"short-lived:    planted {len(by_kind[Kind.BURST])} (all exit), "
        f"removed {count(Kind.BURST, removed)}",
        f"never started:  planted {len(by_kind[Kind.CREATED])}, "
        f"removed {count(Kind.CREATED, removed)}",
        f"protected:      alive {alive(Kind.PROTECTED)}",
        f"unmanaged:      alive {alive(Kind.UNMANAGED)}",
    )
    return Verdict(lines, tuple(problems))


def _overdue(container: Container, now: datetime, budgets: Budgets) -> tuple[str, str] | None:
    """(what was due, why) when the janitor should have acted on this managed container by now."""
    if container.state == State.RUNNING:
        since, budget, interval = container.started_at, budgets.max_runtime, budgets.kill_interval
        verb, what = "killed", "running"
    elif container.state in (State.EXITED, State.DEAD):
        since, budget = container.finished_at, budgets.stopped_grace
        interval, verb, what = budgets.remove_interval, "removed", "exited"
    elif container.state == State.CREATED:
        since, budget = container.created_at, budgets.created_grace
        interval, verb, what = budgets.remove_interval, "removed", "created"
    else:
        return None
    if since is None or now - since <= budget + interval + SLACK:
        return None
    return verb, f"{what} for {(now - since).total_seconds():.0f}s"


@dataclass(frozen=True, slots=True)
class Census:
    states: Counter[str]
    ids: frozenset[str]


def take_census(host: DockerHost) -> Census:
    summaries = host.list_containers(Selector(key=None))
    return Census(Counter(str(s.state) for s in summaries), frozenset(s.id for s in summaries))


def inspect_present(host: DockerHost, ids: Iterable[str]) -> dict[str, Container]:
    found = {}
    for container_id in ids:
        with contextlib.suppress(ContainerGoneError):
            found[container_id] = host.inspect(container_id)
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As Flower binds: a port in TIME_WAIT from a previous run is free for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def flower_workers(port: int, auth: str, *, refresh: bool = False) -> list[str] | None:
    """The workers Flower lists to these credentials, or None when it does not answer so.

    `refresh` makes Flower ask the workers now (about a second) instead of quoting its cache.
    """
    token = base64.b64encode(auth.encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=FLOWER_TIMEOUT)
    path = "/api/workers?refresh=1" if refresh else "/api/workers"
    try:
        connection.request("GET", path, headers={"Authorization": f"Basic {token}"})
        response = connection.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    if response.status != 200:
        return None
    try:
        workers = json.loads(body)
    except ValueError:
        return None
    return sorted(workers) if isinstance(workers, dict) else None


def service_env(
    base: Mapping[str, str],
    *,
    daemon_url: str,
    redis_url: str,
    state_home: Path,
    flower_auth: str,
    flower_port: int,
) -> dict[str, str]:
    """The service's environment: the caller's, minus any JANITOR_* that could change its job."""
    env = {key: value for key, value in base.items() if not key.startswith("JANITOR_")}
    env.update({f"JANITOR_{name.upper()}": value for name, value in BUDGETS.items()})
    env.update(
        JANITOR_HOSTS=f"{HOST_NAME}={daemon_url}",
        JANITOR_REDIS_URL=redis_url,
        JANITOR_LOG_FORMAT="json",
        JANITOR_LOG_LEVEL="INFO",
        XDG_STATE_HOME=str(state_home),
        FLOWER_BASIC_AUTH=flower_auth,
        FLOWER_PORT=str(flower_port),
        PYTHONUNBUFFERED="1",
    )
    return env


class Demo:
    """Everything one demo run starts, so teardown can undo exactly that, in reverse."""

    def __init__(self, duration: timedelta, flower_port: int, out: TextIO) -> None:
        self.duration = duration
        self.flower_port = flower_port
        self.out = out
        self.budgets = Budgets.from_strings(BUDGETS)
        self.flower_auth, self.generated_auth = service.flower_credentials(os.environ)
        self.dir = Path(tempfile.mkdtemp(prefix="janitor-demo-"))
        self.log = ServiceLog(self.dir / "service.log")
        self.redis_url = f"redis://127.0.0.1:{free_port()}/0"
        self.daemon: PrivateDaemon | None = None
        self.host: DockerHost | None = None
        self.service: Child | None = None
        self.workload: Workload | None = None
        self.started = 0.0
        self.started_at = datetime.now(UTC)
        self.watched = 0.0

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def elapsed(self) -> str:
        return f"[{time.monotonic() - self.started:4.0f}s]"

    def run(self) -> int:
        setup_started = time.monotonic()
        try:
            self.daemon = PrivateDaemon(HOST_NAME)
            self.daemon.start()
            ensure_test_image(self.daemon.api())
        except RuntimeError as exc:
            # How the sandbox reports a dockerd that will not start or an image it cannot build.
            print(f"janitor demo: the sandbox did not start: {exc}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        self.host = DockerHost(HostConfig(HOST_NAME, self.daemon.url), timeout=CENSUS_TIMEOUT)
        self._print_header(time.monotonic() - setup_started)
        self._start_service()
        if not self._wait_for_service():
            self._stop_service()
            return EXIT_FAILED
        self.workload = Workload(self.daemon.url)
        self.started, self.started_at = time.monotonic(), datetime.now(UTC)
        self.workload.start()
        ended = self._watch()
        # From here on a Ctrl-C would only leave things half torn down.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        self.watched = time.monotonic() - self.started
        self.say(
            f"{self.elapsed()} {ended}: stopping the workload and the service, then judging "
            "what is left on the sandbox"
        )
        self.workload.stop()
        self._stop_service()
        return self._finish()

    def _wait_for_service(self) -> bool:
        """Wait until Flower lists a live worker: then beat ticks and sweeps can run."""
        assert self.service is not None
        started = time.monotonic()
        self.say("waiting for the janitor service (redis-server, worker with beat, Flower)")
        workers: list[str] = []

        def listed() -> bool:
            workers[:] = flower_workers(self.flower_port, self.flower_auth, refresh=True) or []
            return bool(workers)

        try:
            self.service.wait_ready(listed, SERVICE_START_TIMEOUT, "up with a worker in Flower")
        except (ChildError, TimeoutError) as exc:
            self.say(f"janitor demo: {exc}")
            return False
        self.say(
            f"janitor service up in {time.monotonic() - started:.1f}s: worker "
            f"{', '.join(workers)} online; Flower answers with basic auth on "
            f"http://127.0.0.1:{self.flower_port}/"
        )
        return True

    def _start_service(self) -> None:
        assert self.daemon is not None
        env = service_env(
            os.environ,
            daemon_url=self.daemon.url,
            redis_url=self.redis_url,
            state_home=self.dir / "state",
            flower_auth=self.flower_auth,
            flower_port=self.flower_port,
        )
        # In a session of its own, a terminal's Ctrl-C reaches the demo alone, which stops the
        # service in order (worker first); a forced stop takes its whole group.
        self.service = Child(
            "the janitor service",
            [sys.executable, "-m", "janitor.cli", "run"],
            log_path=self.log.path,
            env=env,
        )
        self.service.start()

    def _print_header(self, setup_s: float) -> None:
        assert self.daemon is not None
        b = BUDGETS
        user, _, password = self.flower_auth.partition(":")
        shown = (
            f"user {user}, password {password}"
            if self.generated_auth
            else f"user {user}, password from FLOWER_BASIC_AUTH"
        )
        self.say(
            f"janitor demo: sandbox dockerd and test image ready in {setup_s:.1f}s; the workload "
            f"will run for {format_duration(self.duration)} (Ctrl-C stops early)"
        )
        for label, value in (
            ("sandbox", f"{self.daemon.url} (private dockerd, data root {self.daemon.dir}/data, "
                        "no network)"),
            ("janitor", f"max runtime {b['max_runtime']}, stopped grace {b['stopped_grace']}, "
                        f"created grace {b['created_grace']}; sweeps every "
                        f"{b['kill_interval']} (kill) and {b['remove_interval']} (remove)"),
            ("Flower", f"http://127.0.0.1:{self.flower_port}/ ({shown})"),
            ("redis", f"{self.redis_url} (started by the service)"),
            ("service log", f"{self.log.path} (JSON lines; action_done is what it did)"),
            ("temp dir", str(self.dir)),
        ):  # fmt: skip
            self.say(f"  {label:<12} {value}")
        w = Shape()
        self.say(
            f"  workload     bursts of {w.burst_sizes[0]}-{w.burst_sizes[1]} short-lived "
            f"containers every {w.burst_gaps_s[0]:g}-{w.burst_gaps_s[1]:g}s; {w.ghosts} ghosts, "
            f"{w.created} never started, {w.protected_running + w.protected_exited} protected "
            f"(janitor.protect=true), {w.unmanaged} unmanaged"
        )

    def _watch(self) -> str:
        """Print the live view until the duration is up; why it ended."""
        assert self.service is not None
        stop: list[str] = []

        def request_stop(signum: int, frame: FrameType | None) -> None:
            del frame
            stop.append(signal.Signals(signum).name)

        # A flag, not KeyboardInterrupt: an exception inside a Docker or HTTP call would leave
        # a half-read connection in the pool that the final census still needs.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
        deadline = self.started + self.duration.total_seconds()
        next_tick = time.monotonic()
        while not stop and time.monotonic() < deadline:
            if self.service.returncode is not None:
                return f"the janitor service exited with code {self.service.returncode}"
            if time.monotonic() >= next_tick:
                self._tick()
                next_tick += TICK
            time.sleep(0.1)
        return f"interrupted ({stop[0]})" if stop else "time is up"

    def _tick(self) -> None:
        assert self.host is not None
        assert self.workload is not None
        for verb, events in _grouped(self.log.poll()):
            self.say(f"{self.elapsed()}   {verb} {_describe(events, verb)}")
        try:
            census = take_census(self.host)
            states = census.states
            sandbox = (
                f"running {states['running']:>3}, exited {states['exited']:>3}, "
                f"created {states['created']:>2}"
            )
        except HostError:
            census, sandbox = None, "not answering"
        protected = [p for p in self.workload.planted() if p.kind is Kind.PROTECTED]
        alive = sum(
            1
            for p in protected
            if census is not None
            and p.id in census.ids
            and p.id not in self.log.killed
            and p.id not in self.log.removed
        )
        flower = flower_workers(self.flower_port, self.flower_auth) is not None
        failed = f", failed {self.log.failed}" if self.log.failed else ""
        errors = f" | workload errors {self.workload.errors}" if self.workload.errors else ""
        self.say(
            f"{self.elapsed()} sandbox: {sandbox} | janitor: {self.log.sweeps:>3} sweeps, "
            f"killed {len(self.log.killed):>2}, removed {len(self.log.removed):>3}{failed} | "
            f"protected alive {alive}/{len(protected)} | "
            f"flower {'up' if flower else 'down'}{errors}"
        )

    def _stop_service(self) -> None:
        """SIGTERM the service and wait; then nothing of its process group may survive."""
        if self.service is not None:
            self.service.stop(SERVICE_STOP_TIMEOUT)

    def _finish(self) -> int:
        assert self.host is not None
        assert self.workload is not None
        assert self.service is not None
        for verb, events in _grouped(self.log.poll()):
            self.say(f"{self.elapsed()}   {verb} {_describe(events, verb)}")
        planted = self.workload.planted()
        try:
            now = self.host.info().now
            present = inspect_present(self.host, take_census(self.host).ids)
        except HostError as exc:
            self.say(f"janitor demo: cannot judge, the sandbox does not answer: {exc}")
            return EXIT_FAILED
        verdict = judge(
            planted,
            present,
            killed=self.log.killed,
            removed=self.log.removed,
            now=now,
            budgets=self.budgets,
        )
        self.say(
            f"summary after {self.watched:.0f}s of workload ({len(planted)} containers planted):"
        )
        for line in verdict.lines:
            self.say(f"  {line}")
        self.say(
            f"  janitor total:  killed {len(self.log.killed)}, removed {len(self.log.removed)}, "
            f"failed {self.log.failed}, in {self.log.sweeps} sweeps"
        )
        for verb, done in (("kill", self.log.killed), ("removal", self.log.removed)):
            if done:
                first = min(e.at for e in done.values()) - self.started_at
                label = f"first {verb}:"
                self.say(f"  {label:<16}{first.total_seconds():.1f}s after the workload began")
        if self.workload.errors:
            self.say(
                f"  workload:       {self.workload.errors} containers failed to start "
                f"(last: {self.workload.last_error})"
            )
        problems = list(verdict.problems)
        if self.service.returncode not in (0, -signal.SIGTERM):
            problems.append(f"the janitor service exited with code {self.service.returncode}")
        if problems:
            self.say("result: FAILED, the janitor did not do its job:")
            for problem in problems:
                self.say(f"  - {problem}")
            self._print_log_tail()
            return EXIT_FAILED
        self.say("result: ok, the janitor did its job")
        return EXIT_OK

    def _print_log_tail(self, lines: int = 15) -> None:
        if not self.log.path.exists():
            return
        text = self.log.path.read_text(errors="replace").splitlines()
        self.say(f"end of {self.log.path}:")
        for line in text[-lines:]:
            self.say(f"  {line}")

    def teardown(self) -> None:
        """Stop whatever is still running and remove every file; safe to call at any point."""
        try:
            if self.workload is not None:
                self.workload.stop()
            self._stop_service()
            if self.host is not None:
                self.host.close()
            if self.daemon is not None:
                try:
                    # Removed first: dockerd would wait 10 s on each `sleep` ignoring SIGTERM.
                    if self.daemon.is_running:
                        self.daemon.reset()
                finally:
                    self.daemon.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def _grouped(events: Sequence[ActionEvent]) -> list[tuple[str, list[ActionEvent]]]:
    kills = [e for e in events if e.action == "kill"]
    removals = [e for e in events if e.action == "remove"]
    return [(verb, group) for verb, group in (("killed", kills), ("removed", removals)) if group]


def _describe(events: Sequence[ActionEvent], verb: str) -> str:
    reasons = ", ".join(f"{reason} {n}" for reason, n in Counter(e.reason for e in events).items())
    if verb == "killed":
        return f"{', '.join(e.name for e in events)} ({reasons})"
    return f"{len(events)} ({reasons})"


def run(duration: timedelta, flower_port: int, out: TextIO = sys.stdout) -> int:
    """The demo: set up, watch for `duration`, judge, tear down."""
    if os.geteuid() != 0:
        raise ConfigError("the demo needs root: it starts a private dockerd (try sudo)")
    if not port_is_free(flower_port):
        raise ConfigError(f"port {flower_port} is in use on 127.0.0.1: pass another --flower-port")
    try:
        check_sandbox_packages()
    except MissingPackagesError as exc:
        raise ConfigError(f"the demo cannot run here: {exc}") from None
    demo = Demo(duration, flower_port, out)
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # As Ctrl-C: a SIGTERM unwinds through teardown instead of leaving daemons behind.
    interrupt_on_signals((signal.SIGTERM,))
    try:
        return demo.run()
    except BrokenPipeError:
        # Whoever read the output has gone (`python -m sandbox.demo | head`): stop quietly, as
        # tools do, and keep the interpreter's final flush from failing again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return EXIT_FAILED
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        _tell(out, "janitor demo: tearing down")
        demo.teardown()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _tell(out, "janitor demo: all stopped and removed")


def _tell(out: TextIO, line: str) -> None:
    # Teardown must go on when whoever read the output has gone (`python -m sandbox.demo | head`).
    with contextlib.suppress(BrokenPipeError):
        print(line, file=out, flush=True)


def parse_duration_option(text: str) -> timedelta:
    """--duration: the contract's duration forms, longer than zero; ConfigError otherwise."""
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--duration {text!r} is invalid: {exc}") from None
    if value <= timedelta(0):
        raise ConfigError(f"--duration {text!r} is invalid: must be longer than 0s")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.demo",
        description="As root: a sandbox dockerd, a spiky workload and the janitor on it, "
        "watched live.",
    )
    parser.add_argument(
        "--duration", default="90s", help="how long the workload runs after setup (default: 90s)"
    )
    parser.add_argument(
        "--flower-port", type=int, default=5555, metavar="PORT", help="default: 5555"
    )
    args = parser.parse_args(argv)
    try:
        return run(parse_duration_option(args.duration), args.flower_port)
    except ConfigError as exc:
        print(f"janitor demo: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
