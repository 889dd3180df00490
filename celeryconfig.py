"""Celery settings as module constants, derived from janitor.settings (JANITOR_* variables).

Nothing here is tuned by editing: change the environment instead (see the README).
"""

from __future__ import annotations

from kombu import Queue

from janitor import schedule as _schedule
from janitor.redisconn import celery_redis
from janitor.settings import cached_settings

_settings = cached_settings()
_redis = celery_redis(_settings)

broker_url = _redis.url
result_backend = _redis.url
# Empty for a plain Redis; the Sentinel master's name for sentinel:// URLs.
broker_transport_options = dict(_redis.transport_options)
result_backend_transport_options = dict(_redis.transport_options)
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # a worker outlives a Redis restart, however long

# JSON only: a task message can never carry a pickle into the worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Sweeps are disposable: acked on receipt, never replayed after a crash; the next tick sweeps.
task_acks_late = False
task_reject_on_worker_lost = False
# Only late-acked tasks are affected, and none is; set to silence Celery 5's warning about it.
worker_cancel_long_running_tasks_on_connection_loss = True
worker_prefetch_multiplier = 1
task_annotations = _schedule.task_annotations(_settings)

# Redis cannot expire list items, but it expires keys: every result goes after this.
result_expires = _settings.result_ttl
result_extended = True  # Flower shows the host argument and task name with each result

worker_send_task_events = True
task_send_sent_event = True
task_track_started = True

worker_hijack_root_logger = False
worker_redirect_stdouts = False

# One queue per host: a worker reads only the queues of the hosts in its own JANITOR_HOSTS,
# plus the default queue, where tasks for unknown host names are rejected.
task_queues = (*(Queue(host.queue) for host in _settings.hosts), Queue(_schedule.DEFAULT_QUEUE))
task_default_queue = _schedule.DEFAULT_QUEUE
task_routes = ("janitor.celery_app.route_task",)
# The sweeps of a host (ghosts, stopped, and the unused prune when it is on) may run side by
# side; more would only queue.
worker_concurrency = (3 if _settings.prunes else 2) * len(_settings.hosts)

beat_schedule = _schedule.beat_schedule(_settings)
# Withholds the ticks of a host no live worker serves (janitor.celery_app.FleetScheduler).
beat_scheduler = "janitor.celery_app:FleetScheduler"
timezone = "UTC"
