"""Fixtures that give integration tests two real Docker hosts and a real Redis.

By default the session starts two private `dockerd` processes ("alpha" and "beta") and one
private `redis-server`, all under /tmp/jt-* and gone at the end. That needs root and the Debian
packages docker.io, redis-server and busybox-static; a missing one fails the session, it never
skips it.

JANITOR_TEST_ENGINE
    Which engine the two private hosts run (sandbox/engines.py): docker-20.10 (Debian 12's
    dockerd), docker-26 (Debian 13's dockerd and containerd), podman-4.3 (Debian 12's podman)
    or podman-5 (Debian 13's); unset, the machine's own dockerd. The two that the machine's
    release does not ship come from scripts/fetch-engines.sh. The conformance part of the suite
    (`-m conformance`) is what CI runs against each other engine; the TLS tests' daemon is the
    selected Docker, or the machine's own dockerd under Podman.

Developers without root may point the tests at servers of their own instead:

JANITOR_TEST_DOCKER_URLS
    Two comma-separated Docker URLs of two different daemons, for example
    "unix:///run/user/1000/docker.sock,tcp://127.0.0.1:2376". The tests import the
    janitor-test:latest image there and remove only containers made from it. Tests that stop,
    restart or freeze a daemon fail with "needs a private daemon".
JANITOR_TEST_REDIS_URL
    A Redis URL such as "redis://127.0.0.1:6379/15". The database it names is FLUSHED before
    every test that uses `redis_url`. Tests that stop or kill Redis fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import pytest

from janitor import failover
from janitor.children import interrupt_on_signals
from sandbox.celery_processes import Processes
from sandbox.daemons import Engine, ExternalDaemon, PrivateDaemon, PrivateEngine
from sandbox.engines import binaries, selected_engine
from sandbox.image import ensure_test_image
from sandbox.podman import PrivatePodman
from sandbox.redisserver import ExternalRedis, PrivateRedis, RedisHost

HOST_NAMES = ("alpha", "beta")


def pytest_configure(config: pytest.Config) -> None:
    # A CI job killed on timeout gets SIGTERM, which would skip teardown and atexit alike and
    # leave daemons running; as KeyboardInterrupt it unwinds through both.
    interrupt_on_signals()


@pytest.fixture(autouse=True)
def _forget_redis_masters(monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker process remembers the Redis master it saw; the tests share one pytest process
    # and a session Redis that some of them restart, which a worker would rightly read as a
    # new master (owner leases unknown for a while). Each test starts as a fresh process.
    monkeypatch.setattr(failover, "_remembered", {})


@pytest.fixture(scope="session")
def docker_hosts() -> Iterator[list[Engine]]:
    hosts = _external_hosts() if os.environ.get("JANITOR_TEST_DOCKER_URLS") else _private_hosts()
    try:
        yield hosts
    finally:
        for host in hosts:
            host.cleanup()


@pytest.fixture
def alpha(docker_hosts: list[Engine]) -> Iterator[Engine]:
    yield from _fresh(docker_hosts[0])


@pytest.fixture
def beta(docker_hosts: list[Engine]) -> Iterator[Engine]:
    yield from _fresh(docker_hosts[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisHost]:
    url = os.environ.get("JANITOR_TEST_REDIS_URL")
    server: RedisHost = ExternalRedis(url) if url else PrivateRedis()
    try:
        if isinstance(server, PrivateRedis):
            server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisHost) -> Iterator[str]:
    """An empty Redis, running again after the test even if the test stopped it."""
    _revive(redis_server)
    redis_server.flush()
    yield redis_server.url
    _revive(redis_server)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Celery worker and beat processes for one test, stopped at its end."""
    with Processes(tmp_path) as processes:
        yield processes


def _fresh(host: Engine) -> Iterator[Engine]:
    # Before as well as after: a test that used `docker_hosts` directly may have left things.
    host.reset()
    yield host
    host.reset()


def _revive(server: RedisHost) -> None:
    if not server.is_running:
        server.start()


def _private_hosts() -> list[Engine]:
    # dockerd takes a few seconds to come up; two at once halve the wait.
    with ThreadPoolExecutor(max_workers=len(HOST_NAMES)) as pool:
        futures = [pool.submit(_start_private, name) for name in HOST_NAMES]
        wait(futures)
    failures = [error for future in futures if (error := future.exception()) is not None]
    started: list[Engine] = [f.result() for f in futures if f.exception() is None]
    if failures:
        for host in started:
            host.cleanup()
        raise BaseExceptionGroup("could not start the test daemons", failures)
    return started


def _start_private(name: str) -> PrivateEngine:
    chosen = binaries(selected_engine())
    daemon = (
        PrivatePodman(name, chosen) if chosen.is_podman else PrivateDaemon(name, binaries=chosen)
    )
    try:
        daemon.start()
        ensure_test_image(daemon.api())
    except BaseException:
        daemon.cleanup()
        raise
    return daemon


def _external_hosts() -> list[Engine]:
    urls = [url.strip() for url in os.environ["JANITOR_TEST_DOCKER_URLS"].split(",")]
    if len(urls) != len(HOST_NAMES):
        raise RuntimeError(
            f"JANITOR_TEST_DOCKER_URLS needs {len(HOST_NAMES)} comma-separated URLs, got {urls}"
        )
    hosts: list[Engine] = []
    try:
        for name, url in zip(HOST_NAMES, urls, strict=True):
            host = ExternalDaemon(name, url)
            hosts.append(host)
            ensure_test_image(host.api())
    except BaseException:
        for started in hosts:
            started.cleanup()
        raise
    return hosts
