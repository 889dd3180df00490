"""Redis Sentinel for the tests and the benchmarks: a private master, its replicas and the
`redis-sentinel` processes that watch them, all on loopback, so a test can kill the master and
watch a replica be promoted."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from janitor.children import Child, at_exit, forget, free_port, wait_for
from sandbox.managed import Managed
from sandbox.prerequisites import require_binary
from sandbox.redisserver import START_TIMEOUT, STOP_TIMEOUT, PrivateRedis

MASTER_NAME = "janitor"
# Fast enough for a test to see a failover within seconds; a real deployment keeps Sentinel's
# defaults (30 s down-after, 3 min failover timeout).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelGroup(Managed):
    """A master, `replicas` replicas of it and `sentinels` Sentinels with a majority quorum."""

    def __init__(self, *, replicas: int = 1, sentinels: int = 3) -> None:
        self._binary = require_binary("redis-sentinel", package="redis-sentinel")
        self.dir = Path(tempfile.mkdtemp(prefix="jt-sentinel-", dir="/tmp"))
        self.servers = [PrivateRedis()]
        self.servers += [PrivateRedis(replica_of=self.servers[0].port) for _ in range(replicas)]
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.quorum = sentinels // 2 + 1
        self._sentinels: list[Child] = []
        self._clients: dict[int, redis.Redis[str]] = {}

    def __repr__(self) -> str:
        return f"SentinelGroup(sentinels={self.sentinel_ports})"

    @property
    def url(self) -> str:
        """JANITOR_REDIS_URL for this group; JANITOR_REDIS_MASTER is MASTER_NAME."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"sentinel://{hosts}/0"

    def start(self) -> None:
        at_exit(self, self.cleanup)
        for server in self.servers:
            server.start()
        for replica in self.servers[1:]:
            wait_for(
                lambda r=replica: _info(r.client(), "replication")["master_link_status"] == "up",
                timeout=START_TIMEOUT,
                what=f"{replica} to replicate",
            )
        for port in self.sentinel_ports:
            self._sentinels.append(self._start_sentinel(port))
        wait_for(
            lambda: all(
                self._sentinel(port).sentinel_master(MASTER_NAME)["num-other-sentinels"]
                >= len(self.sentinel_ports) - 1
                for port in self.sentinel_ports
            ),
            timeout=START_TIMEOUT * 2,
            what="the Sentinels to find each other",
        )

    def _start_sentinel(self, port: int) -> Child:
        config = self.dir / f"sentinel-{port}.conf"
        # Sentinel rewrites its configuration file as it learns: it must be its own, writable.
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.servers[0].port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        child = Child(
            f"redis-sentinel :{port}",
            [self._binary, str(config)],
            log_path=self.dir / f"sentinel-{port}.log",
        )
        child.start()
        child.wait_ready(lambda: _pings(self._sentinel(port)), START_TIMEOUT, "answering PING")
        return child

    def master_port(self) -> int:
        """The master's port as the Sentinels name it now."""
        master = self._sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            MASTER_NAME
        )
        return int(master[1])

    def master(self) -> PrivateRedis:
        port = self.master_port()
        return next(server for server in self.servers if server.port == port)

    def wait_for_failover(self, old_port: int, timeout: float = 30.0) -> PrivateRedis:
        """Until the Sentinels name a new master that answers as one; that server."""

        def promoted() -> bool:
            try:
                new = self.master()
                return new.port != old_port and _info(new.client(), "replication")["role"] == (
                    "master"
                )
            except (redis.ConnectionError, StopIteration):
                return False

        wait_for(promoted, timeout=timeout, what="a replica to be promoted")
        return self.master()

    def _sentinel(self, port: int) -> redis.Redis[str]:
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                "127.0.0.1", port, socket_timeout=1, retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )  # fmt: skip
        return self._clients[port]

    def cleanup(self) -> None:
        for client in self._clients.values():
            client.close()
        for child in self._sentinels:
            child.stop(STOP_TIMEOUT)
        for server in self.servers:
            server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
        forget(self)


def _info(client: redis.Redis[bytes], section: str) -> dict[str, object]:
    return dict(client.info(section))


def _pings(client: redis.Redis[str]) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
