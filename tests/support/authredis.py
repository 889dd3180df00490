"""A private redis-server that demands a password, for the tests that hunt for leaked secrets."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from support.tls import free_port

START_TIMEOUT = 10.0


class PasswordRedis:
    """redis-server with --requirepass on a free loopback port; gone with every file on exit."""

    def __init__(self, password: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found on PATH: apt-get install redis-server")
        self._binary = binary
        self.password = password
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jt-authredis-", dir="/tmp"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    def url_with_password(self, password: str) -> str:
        return f"redis://:{quote(password, safe='')}@127.0.0.1:{self.port}/0"

    def __enter__(self) -> Self:
        command = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--requirepass", self.password,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        no_retry = Retry(NoBackoff(), 0)
        with redis.Redis(
            "127.0.0.1", self.port, password=self.password, socket_timeout=1, retry=no_retry
        ) as probe:
            while True:
                try:
                    probe.ping()
                except redis.ConnectionError:
                    pass
                else:
                    return
                if self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not answer within {START_TIMEOUT} s")
                time.sleep(0.05)

    def _stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
