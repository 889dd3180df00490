"""The janitor as it is deployed, for the spike case's service rows: per measured row, a real
`celery -A janitor worker --beat` (over the case's private Redis) configured only through
JANITOR_* variables, its JSON log in a file the bench reads back."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery

from bench import worker
from bench.harness import BenchError, Host, janitor_env
from janitor.children import ChildError, read_json_log, wait_for
from sandbox.celery_processes import CeleryProcess, start_worker
from sandbox.managed import Managed

# The first "tick" the bench waits for before it measures anything: a ghost sweep, which
# reads no spawn rate, so it cannot start a deferral whose rechecks would later remove the
# backlog behind the bench's back.
WARM_UP_TIMEOUT = 60.0
# Resolution of the backlog-clear figure; a list call every half second costs the daemon
# little, and polling starts only once the spike is over.
POLL_S = 0.5


class Service(Managed):
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
        self._worker: CeleryProcess | None = None

    def start(self) -> None:
        self._worker = start_worker(
            self.env,
            hostname="bench@janitor",
            log_path=self.log_path,
            beat=True,
            schedule_path=self.schedule_path,
        )
        try:
            self._worker.wait_ready(worker.READY_TIMEOUT)
        except (ChildError, TimeoutError) as exc:
            raise BenchError(f"the service's worker did not come up: {exc}") from None
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

    @property
    def pid(self) -> int:
        """The worker's own pid: its pool and embedded beat are its descendants."""
        if self._worker is None:
            raise BenchError("the service has not started")
        return self._worker.pid

    def check_alive(self) -> None:
        try:
            if self._worker is not None:
                self._worker.check_alive()
        except ChildError as exc:
            raise BenchError(f"the service's worker exited: {exc}") from None

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return read_json_log(self.log_path, event)

    def log_tail(self) -> str:
        return self._worker.log_tail() if self._worker is not None else "(not started)"

    def cleanup(self) -> None:
        self._app.close()
        if self._worker is not None:
            self._worker.stop(worker.STOP_TIMEOUT)
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

    def seen_at() -> float:
        now = time.time()
        count = len(api.containers(all=True, quiet=True, filters={"label": selector}))
        return now if count == target else 0.0

    try:
        return wait_for(
            seen_at,
            timeout=timeout,
            what=f"{target} containers with {selector}",
            interval=POLL_S,
            alive=service.check_alive,
            details=lambda: f"end of the service's log:\n{service.log_tail()}",
        )
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None
