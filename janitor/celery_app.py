"""The Celery app: configuration from celeryconfig, routing by host, logging through structlog."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
import threading
from typing import Any

import redis
import structlog
from celery import Celery, signals
from celery.beat import PersistentScheduler, ScheduleEntry

from janitor import logs
from janitor.errors import ConfigError
from janitor.schedule import queue_for
from janitor.settings import cached_settings


def _settings_or_exit() -> None:
    # A bad JANITOR_* value must stop `celery -A janitor ...` with the one-line message,
    # not with the traceback Celery prints for any import error.
    try:
        cached_settings()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"janitor: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _metrics_dir_in_environment() -> None:
    # prometheus_client picks its storage when first imported: the directory must be in the
    # environment before that, and before the pool forks, so every process writes there.
    if cached_settings().metrics_port and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        path = tempfile.mkdtemp(prefix="janitor-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        creator = os.getpid()

        def remove_metrics_dir() -> None:
            # Forked processes inherit this hook; only the one that made the directory acts.
            if os.getpid() == creator:
                shutil.rmtree(path, ignore_errors=True)

        atexit.register(remove_metrics_dir)


# Flower's view of the janitor: each sweep's host (its argument) and report (its result, whose
# status and counts come first) in the task list; no buttons that revoke tasks or stop workers.
FLOWER_DEFAULTS = {
    "FLOWER_TASKS_COLUMNS": "name,args,state,result,received,runtime,worker",
    "FLOWER_READ_ONLY": "true",
}


def _flower_defaults() -> None:
    # Flower reads FLOWER_* variables after Celery has loaded this app, so defaults set here
    # reach every Flower started against the janitor; an operator's own variable wins.
    for name, value in FLOWER_DEFAULTS.items():
        os.environ.setdefault(name, value)


def _json_logging_from_the_start() -> None:
    # The worker and beat configure logging through Celery's setup_logging signal below;
    # Flower never sends it, and tornado adds its own plain-text handler only where the root
    # logger has none. Configured here, every process of `celery -A janitor` logs JSON lines.
    settings = cached_settings()
    logs.configure(settings.log_format, settings.log_level)


_settings_or_exit()
_metrics_dir_in_environment()
_flower_defaults()
_json_logging_from_the_start()
import celeryconfig  # noqa: E402  (needs the settings check above to have passed)
from janitor import fleet, follower, metrics  # noqa: E402  (after the metrics directory is set)
from janitor.follower import GAP_SWEEP_HOLD  # noqa: E402
from janitor.locks import REDIS_ERRORS  # noqa: E402
from janitor.redisconn import redis_client  # noqa: E402

log = structlog.get_logger(__name__)

app = Celery("janitor", include=["janitor.tasks"])
app.config_from_object(celeryconfig)


def route_task(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: dict[str, Any], **_: Any
) -> dict[str, str] | None:
    """Send each janitor task to the queue of the host it names."""
    if not name.startswith("janitor."):
        return None
    host = args[0] if args else kwargs.get("host")
    return {"queue": queue_for(cached_settings(), host)}


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    # Connecting this signal stops Celery from configuring logging itself.
    settings = cached_settings()
    logs.configure(settings.log_format, settings.log_level)


@signals.task_prerun.connect
def _bind_task(task_id: str, task: Any, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task_name=task.name)


@signals.task_postrun.connect
def _unbind_task(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    port = cached_settings().metrics_port
    if port:
        metrics.serve(port)


@signals.worker_process_shutdown.connect
def _forget_process(pid: int, **_: Any) -> None:
    metrics.forget_process(pid)


@functools.cache
def _fleet_redis() -> redis.Redis[bytes]:
    return redis_client(cached_settings(), timeout=5.0)


class _LiveWorkerMark:
    """Refreshes the live-worker key of each of the worker's hosts from a thread of the main
    process, which lives as long as the worker consumes; a frozen or dead worker's marks
    expire after fleet.LIVE_WORKER_TTL."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker = ""

    def start(self, worker: str) -> None:
        self._worker = worker
        # The first mark is written before the worker says it is ready, so that a beat
        # started on that word never withholds the worker's first ticks.
        self._mark()
        self._thread = threading.Thread(target=self._refresh, daemon=True, name="live-worker")
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        try:
            fleet.unmark_worker(_fleet_redis(), _host_names(), self._worker)
        except REDIS_ERRORS as exc:
            log.warning("live_worker_unmarked", error=str(exc))

    def _mark(self) -> None:
        try:
            fleet.mark_worker_alive(_fleet_redis(), _host_names(), self._worker)
        except REDIS_ERRORS as exc:
            # Redis is down or failing over: the next refresh tries again.
            log.warning("live_worker_unmarked", error=str(exc))

    def _refresh(self) -> None:
        period = fleet.LIVE_WORKER_REFRESH.total_seconds()
        while not self._stop.wait(period):
            self._mark()


def _host_names() -> list[str]:
    return [host.name for host in cached_settings().hosts]


_live_worker_mark = _LiveWorkerMark()


@signals.worker_ready.connect
def _mark_live_worker(sender: Any, **_: Any) -> None:
    _live_worker_mark.start(str(sender.hostname))


@signals.worker_shutdown.connect
def _unmark_live_worker(**_: Any) -> None:
    _live_worker_mark.stop()


def _start_gap_sweep(host: str) -> None:
    # By name: this module cannot import the tasks, which import it. Routed like any tick.
    app.send_task("janitor.remove_stopped", args=(host,), expires=GAP_SWEEP_HOLD.total_seconds())


def _spike_followers() -> list[follower.HostFollower]:
    settings = cached_settings()
    if settings.spike_rate <= 0:
        return []
    client = redis_client(settings, timeout=settings.docker_timeout.total_seconds())
    return [
        follower.HostFollower(
            host,
            spike_rate=settings.spike_rate,
            docker_timeout=settings.docker_timeout,
            client=client,
            start_gap_sweep=_start_gap_sweep,
        )
        for host in settings.hosts
    ]


_followers = follower.Follower()


@signals.worker_ready.connect
def _follow_spikes(**_: Any) -> None:
    # In the main process, which lives as long as the worker consumes: one stream per host,
    # not one per pool process.
    _followers.start(_spike_followers())


@signals.worker_shutdown.connect
def _stop_following(**_: Any) -> None:
    _followers.stop()


class FleetScheduler(PersistentScheduler):
    """Beat's scheduler, withholding the ticks of a host that no live worker serves: its
    queue would only grow (Redis cannot expire list items) until a worker came back to a pile
    of stale ticks. The check comes before Celery's "Sending due task" line, so that line
    is logged only for a tick that is sent."""

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        host = entry.args[0] if entry.args else None
        if isinstance(host, str) and not _is_served(host):
            log.warning("tick_withheld", host=host, task=entry.task, why="no live worker")
            return
        super().apply_entry(entry, producer=producer)


def _is_served(host: str) -> bool:
    try:
        return fleet.live_worker(_fleet_redis(), host) is not None
    except REDIS_ERRORS:
        # Without Redis the tick cannot be sent either; let Celery report and retry it.
        return True
