"""The janitor as it is deployed, for the spike case's service rows: a private redis-server
(one per case) and, per measured row, a real `celery -A janitor worker --beat` configured only
through JANITOR_* variables, its JSON log in a file the bench reads back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from celery import Celery

from bench import worker
from bench.harness import CELERY, REPO_ROOT, BenchError, Host, janitor_env

# The first "tick" the bench waits for before it measures anything: a ghost sweep, which
# reads no spawn rate, so it cannot start a deferral whose rechecks would later remove the
# backlog behind the bench's back.
WARM_UP_TIMEOUT = 60.0
# Resolution of the backlog-clear figure; a list call every half second costs the daemon
# little, and polling starts only once the spike is over.
POLL_S = 0.5


class ServiceRedis:
    """The case's broker, result backend and lock store, emptied between rows."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = worker.free_port()
        self._server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._server = worker.start_redis(self.port, self.directory)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(worker.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        shutil.rmtree(self.directory, ignore_errors=True)

    def flush(self) -> None:
        """Forget the previous row: its queued rechecks, its deferral's start, its leases."""
        with redis.Redis.from_url(self.url, socket_timeout=5) as client:
            client.flushall()


class Service:
    """One `celery -A janitor worker --beat` over one host; stopped, pool and beat included,
    when the `with` block ends, however it ends."""

    def __init__(
        self,
        host: Host,
        redis_url: str,
        settings: Mapping[str, str],
        directory: Path,
        label: str,
    ) -> None:
        self.host = host
        self.env = janitor_env([host], redis_url=redis_url, **settings)
        # Nothing from the caller's Celery setup may change how the service runs.
        for name in [key for key in self.env if key.startswith("CELERY_")]:
            del self.env[name]
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_path = directory / f"{label}.log"
        self.schedule_path = directory / f"{label}-schedule"
        self.queue = f"janitor.{host.name}"
        self._app = Celery("janitor-bench", broker=redis_url, backend=redis_url)
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close()

    def _start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # A session of its own: a Ctrl-C at the terminal reaches the bench only, which
            # then stops the service in order instead of leaving its pool behind.
            self._proc = subprocess.Popen(
                [CELERY, "-A", "janitor", "worker", "--beat",
                 "--schedule", str(self.schedule_path), "--hostname", "bench@janitor"],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        worker.wait_until_ready(self._app, self._proc, self.log_path)
        warm_up = self._app.send_task(
            "janitor.kill_ghosts", args=[self.host.name], queue=self.queue
        )
        report = warm_up.get(timeout=WARM_UP_TIMEOUT)
        if not isinstance(report, dict) or report.get("status") != "ok":
            raise BenchError(f"the service's first ghost tick reported {report!r}")

    def tick(self) -> None:
        """The stopped sweep's tick, as beat sends it (same task, host and queue); whatever
        follows, the deferral, its rechecks and the sweep, is the service's own doing."""
        self._app.send_task("janitor.remove_stopped", args=[self.host.name], queue=self.queue)

    def check_alive(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BenchError(f"the service's worker exited; end of its log:\n{self.log_tail()}")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """Its JSON log lines in order; Celery's banner and a half-written line are skipped."""
        found = []
        with self.log_path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if not line.startswith("{"):
                    continue
                try:
                    parsed = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(parsed, dict) and (event is None or parsed.get("event") == event):
                    found.append(parsed)
        return found

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no output)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _close(self) -> None:
        self._app.close()
        if self._proc is not None:
            worker.stop_process(self._proc)
        # Beat's shelve may add a suffix of its own to the name it is given.
        for path in self.schedule_path.parent.glob(f"{self.schedule_path.name}*"):
            path.unlink(missing_ok=True)


def epoch(event: Mapping[str, Any]) -> float:
    """A log line's time (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def wait_for_count(service: Service, selector: str, target: int, timeout: float) -> float:
    """Poll the service's daemon until `target` containers carry `selector`; the time.time()
    of the poll that saw it."""
    api = service.host.api
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        if len(api.containers(all=True, quiet=True, filters={"label": selector})) == target:
            return now
        service.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{selector}: still not {target} containers after {timeout:.0f} s; end of the "
                f"service's log:\n{service.log_tail()}"
            )
        time.sleep(POLL_S)
