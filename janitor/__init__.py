"""container-janitor: kills ghost containers and removes stopped ones on busy Docker hosts.

`celery -A janitor worker|beat|flower` finds the Celery app here; it is imported lazily so
that the CLI and the pure modules do not pay for Celery.
"""

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from janitor.celery_app import app

        return app
    raise AttributeError(name)
