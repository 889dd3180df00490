"""Redis for the tests, the benchmarks and the demo: a private `redis-server` on loopback (with
a password if asked), or a developer's own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from janitor.children import Child, at_exit, forget, free_port
from sandbox.managed import Borrowed, Lifecycle, Managed
from sandbox.prerequisites import require_binary

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class RedisHost(Lifecycle, Protocol):
    """What tests may ask of a Redis, private or not."""

    @property
    def url(self) -> str: ...

    @property
    def is_running(self) -> bool: ...

    def client(self) -> redis.Redis[bytes]: ...

    def kill(self) -> None: ...

    def flush(self) -> None: ...


class PrivateRedis(Managed):
    """A redis-server of our own; without `persistence` it forgets everything when it stops,
    with `password` it demands one (and `url` carries it)."""

    def __init__(
        self,
        *,
        persistence: bool = False,
        password: str | None = None,
        replica_of: int | None = None,
    ) -> None:
        self._binary = require_binary("redis-server", package="redis-server")
        self._persistence = persistence
        self.password = password
        # A replica of the private Redis on this loopback port, for Sentinel's groups.
        self.replica_of = replica_of
        self.dir = Path(tempfile.mkdtemp(prefix="jt-redis-", dir="/tmp"))
        self.log_path = self.dir / "redis.log"
        self.port = free_port()
        self._server: Child | None = None
        self._client: redis.Redis[bytes] | None = None

    def __repr__(self) -> str:
        return f"PrivateRedis(port={self.port})"

    @property
    def url(self) -> str:
        return self.url_with_password(self.password)

    def url_with_password(self, password: str | None) -> str:
        auth = "" if password is None else f":{quote(password, safe='')}@"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def is_running(self) -> bool:
        return self._server is not None and self._server.is_running

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
            "--save", "",
            "--appendonly", "yes" if self._persistence else "no",
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self._server = Child(f"redis-server :{self.port}", command, log_path=self.log_path)
        at_exit(self, self.cleanup)
        self._server.start()
        # redis-py retries a refused connection ten times with backoff by default: one try a poll.
        probe = redis.Redis(
            "127.0.0.1", self.port, password=self.password, socket_timeout=1,
            retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        try:
            self._server.wait_ready(lambda: _pings(probe), START_TIMEOUT, "answering PING")
        except BaseException:
            self.kill()
            raise
        finally:
            probe.close()

    def stop(self) -> None:
        """SIGTERM, as a service manager would; with persistence the AOF is flushed first."""
        if self._server is not None:
            self._server.stop(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self._server is not None:
            self._server.kill()

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
        forget(self)


class ExternalRedis(Borrowed):
    """A Redis the developer runs; `flush` empties only the database named in its URL."""

    private = "redis-server"
    how = "unset JANITOR_TEST_REDIS_URL"

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

    def kill(self) -> None:
        raise self._needs_private("kill")

    def flush(self) -> None:
        self.client().flushdb()

    def cleanup(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _pings(probe: redis.Redis[bytes]) -> bool:
    try:
        return bool(probe.ping())
    except redis.ConnectionError:
        return False
