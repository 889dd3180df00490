"""Redis for integration tests: a private `redis-server` on loopback, or a developer's own."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class RedisHost(Protocol):
    """What tests may ask of a Redis, private or not."""

    @property
    def url(self) -> str: ...

    @property
    def is_running(self) -> bool: ...

    def client(self) -> redis.Redis[bytes]: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def flush(self) -> None: ...

    def cleanup(self) -> None: ...


class PrivateRedis:
    """A redis-server of our own; without `persistence` it forgets everything when it stops."""

    def __init__(self, *, persistence: bool = False) -> None:
        path = shutil.which("redis-server")
        if path is None:
            raise RuntimeError("redis-server not found on PATH: apt-get install redis-server")
        self._binary = path
        self._persistence = persistence
        self.dir = Path(tempfile.mkdtemp(prefix="jt-redis-", dir="/tmp"))
        self.log_path = self.dir / "redis.log"
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: redis.Redis[bytes] | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"PrivateRedis({self.url!r})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> redis.Redis[bytes]:
        """The server's one client, kept across restarts and closed by `cleanup`."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=5)
        return self._client

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        command = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "yes" if self._persistence else "no",
        ]  # fmt: skip
        # A session of its own keeps a terminal's Ctrl-C away, so a test decides when it dies.
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _live.add(self)
        try:
            self._wait_until_ready()
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM, as a service manager would; with persistence the AOF is flushed first."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def restart(self) -> None:
        """Stop and start on the same port, so URLs handed out stay valid."""
        self.stop()
        self.start()

    def flush(self) -> None:
        self.client().flushall()

    def cleanup(self) -> None:
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        # redis-py retries a refused connection ten times with backoff by default: one try a poll.
        no_retry = Retry(NoBackoff(), 0)
        with redis.Redis("127.0.0.1", self.port, socket_timeout=1, retry=no_retry) as probe:
            while True:
                try:
                    probe.ping()
                except redis.ConnectionError:
                    pass
                else:
                    return
                if self._proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {self._proc.returncode}; "
                        f"end of {self.log_path}:\n{self._log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not answer PING within {START_TIMEOUT:.0f} s; "
                        f"end of {self.log_path}:\n{self._log_tail()}"
                    )
                time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ExternalRedis:
    """A Redis the developer runs; `flush` empties only the database named in its URL."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._client: redis.Redis[bytes] | None = None

    def __repr__(self) -> str:
        return f"ExternalRedis({self.url!r})"

    @property
    def url(self) -> str:
        return self._url

    @property
    def is_running(self) -> bool:
        return True

    def client(self) -> redis.Redis[bytes]:
        if self._client is None:
            self._client = redis.Redis.from_url(self._url, socket_timeout=5)
        return self._client

    def start(self) -> None:
        raise self._needs_private("start")

    def stop(self) -> None:
        raise self._needs_private("stop")

    def kill(self) -> None:
        raise self._needs_private("kill")

    def restart(self) -> None:
        raise self._needs_private("restart")

    def flush(self) -> None:
        self.client().flushdb()

    def cleanup(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _needs_private(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"cannot {what} {self.url}: this test needs a private redis-server "
            "(unset JANITOR_TEST_REDIS_URL)"
        )


def _free_port() -> int:
    # Racy in theory (the port is free only when asked), harmless on a test machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_live: set[PrivateRedis] = set()
_owner_pid = os.getpid()


@atexit.register
def _cleanup_leftover_servers() -> None:
    # Teardown did not run (an interrupted session); a forked child must not do it twice.
    if os.getpid() == _owner_pid:
        for server in list(_live):
            server.cleanup()
