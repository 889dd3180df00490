"""structlog configuration: JSON lines by default, a console renderer on request.

Standard-library loggers (Celery's, kombu's) go through the same renderer, so a worker's
output is one stream of one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog

_HANDLER_NAME = "janitor"


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]


def configure(log_format: str = "json", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log line, ours and the libraries', to `stream` in one format."""
    renderer: Any
    if log_format == "console":
        # Plain tracebacks whether or not rich is installed: the same lines in every
        # environment, and the CLI need not import rich (see cli._import_structlog_without_rich).
        renderer = structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    # Configuring twice (CLI then Celery's setup_logging signal) must not double every line.
    for existing in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Python's warnings (Celery's SecurityWarning for a root worker) would be bare text.
    logging.captureWarnings(True)
    # The Docker SDK's urllib3 logs every connection at DEBUG; keep it out unless asked.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLevelName(level)))
