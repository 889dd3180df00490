"""`janitor run`: the whole janitor on one machine, supervised by one process.

It starts a local redis-server when none answers at JANITOR_REDIS_URL (it installs nothing:
scripts/bootstrap.sh does), a Celery worker with an embedded beat, and Flower on
127.0.0.1 behind basic auth; it stops them all when one of them dies or on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import redis

from janitor.children import Child, ChildError
from janitor.dockerhost import DockerHost
from janitor.errors import ConfigError, HostError
from janitor.locks import REDIS_ERRORS
from janitor.redisconn import redis_client
from janitor.settings import Settings

FLOWER_DEFAULT_PORT = 5555
# Long enough for a warm shutdown to finish the sweep in progress.
STOP_TIMEOUT = 30.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Gossip makes every worker receive every other worker's heartbeats (N^2 deliveries) and mingle
# ships the revoked set to every new worker; the janitor's leases coordinate its sweeps, so
# neither is needed. Heartbeats stay: Flower's worker view reads them.
LEAN_WORKER = ("--without-gossip", "--without-mingle")


def say(message: str) -> None:
    print(f"janitor: {message}", file=sys.stderr, flush=True)


def state_dir() -> Path:
    """Where `janitor run` keeps its Redis data and beat schedule between runs."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(base) / "container-janitor"
    path.mkdir(parents=True, exist_ok=True)
    return path


def redis_answers(settings: Settings) -> bool:
    client = redis_client(settings, connect_timeout=1, timeout=3)
    try:
        return bool(client.ping())
    except REDIS_ERRORS:
        return False
    except redis.exceptions.AuthenticationError:
        return True  # something answers; the worker will report the credentials problem
    finally:
        client.close()


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError(
            "no Redis answers at JANITOR_REDIS_URL and redis-server is not installed: run "
            "scripts/bootstrap.sh (or apt-get install redis-server), or point "
            "JANITOR_REDIS_URL at a running Redis"
        )
    return found


def local_redis_command(url: str, data_dir: Path) -> list[str]:
    """The redis-server command line that serves JANITOR_REDIS_URL on this machine."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "") not in _LOOPBACK:
        raise ConfigError(
            "no Redis answers at JANITOR_REDIS_URL and it is not a local redis:// URL, so "
            "`janitor run` cannot start one: start that Redis or use redis://127.0.0.1:6379/0"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        redis_server_binary(),
        "--bind", parts.hostname or "127.0.0.1",
        "--port", str(parts.port or 6379),
        "--dir", str(data_dir),
        # Persistence keeps the daemon-identity records across restarts of `janitor run`.
        "--appendonly", "yes",
        "--save", "",
        # Its own log file keeps the janitor's stdout one stream of JSON lines.
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    if parts.password:
        command += ["--requirepass", parts.password]
    return command


def flower_credentials(environ: Mapping[str, str]) -> tuple[str, bool]:
    """FLOWER_BASIC_AUTH (user:password), or a fresh random one; True when generated."""
    given = environ.get("FLOWER_BASIC_AUTH", "")
    if given:
        user, sep, password = given.partition(":")
        if not (user and sep and password):
            raise ConfigError("FLOWER_BASIC_AUTH must be user:password")
        return given, False
    return f"janitor:{secrets.token_urlsafe(12)}", True


@dataclass
class Supervisor:
    """Child processes that live and die together.

    They share our process group and our output: a service manager that stops `janitor run`
    by its group stops them with it, and the worker's JSON lines are ours.
    """

    children: dict[str, Child] = field(default_factory=dict)
    stopping: bool = False

    def start(self, name: str, command: list[str], env: Mapping[str, str]) -> None:
        self.children[name] = Child(name, command, env=env, own_session=False)
        self.children[name].start()

    def wait_for(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        try:
            self.children[name].wait_ready(ready, timeout)
        except (ChildError, TimeoutError) as exc:
            raise ConfigError(f"{name} did not start: {exc}") from None

    def watch(self) -> int:
        """Block until a child exits or we are asked to stop; the exit code to return."""
        while not self.stopping:
            for name, child in self.children.items():
                code = child.returncode
                if code is not None:
                    say(f"{name} exited with code {code}; stopping the rest")
                    return code or 1
            time.sleep(0.5)
        return 0

    def stop(self) -> None:
        # The worker first: a warm shutdown lets a sweep in progress finish its report. Our
        # own Redis last, once its clients are gone: stopped with them, it left the worker's
        # consumer a closed connection to log as a plain traceback while it shut down.
        ordered = sorted(self.children.values(), key=lambda child: child.name != "worker")
        clients = [child for child in ordered if child.name != "redis"]
        for child in clients:
            child.terminate()
        for child in clients:
            child.stop(STOP_TIMEOUT)
        if "redis" in self.children:
            self.children["redis"].stop(STOP_TIMEOUT)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self.stopping = True


def celery_command(*args: str) -> list[str]:
    # --quiet: no startup banner, so the output stays one stream of JSON lines.
    return [sys.executable, "-m", "celery", "-A", "janitor", "--quiet", *args]


def report_hosts(settings: Settings) -> None:
    for config in settings.hosts:
        with DockerHost(settings.host(config.name), timeout=settings.docker_timeout) as docker:
            try:
                info = docker.info()
            except HostError as exc:
                say(f"host {config.name}: NOT reachable now ({exc}); sweeps fail until it is")
                continue
        say(f"host {config.name}: {config.url}, {info.engine}, {info.containers} containers")


def run(settings: Settings, *, flower_port: int | None = None) -> int:
    """Run Redis (if needed), a worker with embedded beat, and Flower until stopped."""
    state = state_dir()
    supervisor = Supervisor()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, supervisor.request_stop)
    env = dict(os.environ)
    auth, generated = flower_credentials(env)
    port = flower_port or int(env.get("FLOWER_PORT", FLOWER_DEFAULT_PORT))
    try:
        if not redis_answers(settings):
            say(f"no Redis at {settings.redis_url_redacted}: starting a local redis-server")
            supervisor.start("redis", local_redis_command(settings.redis_url, state / "redis"), env)
            supervisor.wait_for("redis", lambda: redis_answers(settings), timeout=30)
        report_hosts(settings)
        supervisor.start(
            "worker",
            celery_command("worker", "--beat", "--schedule", str(state / "celerybeat-schedule"),
                           *LEAN_WORKER, "--loglevel", settings.log_level),
            env,
        )  # fmt: skip
        supervisor.start(
            "flower",
            celery_command("flower", "--address=127.0.0.1", f"--port={port}"),
            {**env, "FLOWER_BASIC_AUTH": auth},
        )
        user, _, password = auth.partition(":")
        shown = f"user {user!r}, password {password!r}" if generated else f"user {user!r}"
        say(f"Flower on http://127.0.0.1:{port}/ ({shown}; set FLOWER_BASIC_AUTH to choose)")
        return supervisor.watch()
    finally:
        supervisor.stop()
