"""A daemon's container starts as they happen, from its live event stream.

Like `host`, it reports what the daemon says and decides nothing: the spike detector and its
follower (janitor.follower) make sense of it.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
import requests.exceptions
import urllib3.exceptions

from janitor.dockerhost.host import DockerHost, is_container_start
from janitor.errors import HostUnreachableError


def follow_starts(
    docker: DockerHost, *, quiet: Callable[[], timedelta]
) -> Iterator[datetime | None]:
    """Each container start on the daemon's clock as the daemon announces it, and None
    after every quiet span without one, so the caller can look at its clock and at whether
    it should stop. `quiet()` gives the span as each stream opens; when it gives a shorter
    one after a start, the stream is opened again at once, under it. Raises a HostError when
    the daemon cannot be reached or ends the stream; never returns.

    A stream that timed out cannot be read on (the socket is spent), so after a quiet span
    the stream is opened again from the second it was opened at (its `Date`, on the daemon's
    clock) or of the last start seen, whichever is later; the starts the daemon replays from
    there are dropped here if already seen. Nothing falls between two streams, and a quiet
    host's daemon replays a second or two of its buffer, not all of it, at each reopening.
    """
    last_nano = 0
    seen_at_last: set[str] = set()
    since: int | None = None
    while True:
        span = quiet()
        response = _open(docker, since, span)
        opened_at = _date_of(response)
        try:
            for event in _events(docker, response):
                nano = int(event.get("timeNano", 0))
                actor_id = str((event.get("Actor") or {}).get("ID") or event.get("id") or "")
                if nano < last_nano or (nano == last_nano and actor_id in seen_at_last):
                    continue
                if nano > last_nano:
                    last_nano, seen_at_last = nano, set()
                seen_at_last.add(actor_id)
                since = nano // 1_000_000_000
                yield datetime.fromtimestamp(nano / 1e9, tz=UTC)
                if quiet() < span:
                    break  # reopened from this start's second, which is then dropped as seen
        except _Quiet:
            if opened_at is not None:
                since = max(since or opened_at, opened_at)
            yield None
        finally:
            response.close()


class _Quiet(Exception):
    """No event for the read timeout: the stream is spent, the daemon is fine."""


def _open(docker: DockerHost, since: int | None, quiet: timedelta) -> requests.Response:
    api = docker._client()
    # Podman 4.3 ignores the `event` filter: _events filters on our side as well.
    params = {"filters": json.dumps({"type": ["container"], "event": ["start"]})}
    if since is not None:
        params["since"] = str(since)

    def connect() -> requests.Response:
        response = api.get(
            f"{api.base_url}/v{api.api_version}/events",
            params=params,
            stream=True,
            # The connection under the client's timeout; each read under the quiet span.
            timeout=(docker._timeout, quiet.total_seconds()),
        )
        response.raise_for_status()
        return response

    return docker._guard("events", connect)


def _date_of(response: requests.Response) -> int | None:
    """The daemon's clock when it answered, in whole seconds (Go's servers always send it)."""
    try:
        return int(email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp())
    except (KeyError, TypeError, ValueError):
        return None


def _events(docker: DockerHost, response: requests.Response) -> Iterator[dict[str, Any]]:
    lines = response.iter_lines(chunk_size=None)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            raise HostUnreachableError(
                f"{docker.name} ({docker.config.url}) ended its event stream"
            ) from None
        except (requests.exceptions.RequestException, OSError) as exc:
            # requests reports a read timeout mid-stream as a ConnectionError around urllib3's.
            if exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError):
                raise _Quiet from exc
            raise HostUnreachableError(
                f"{docker.name} ({docker.config.url}) lost its event stream: {exc}"
            ) from exc
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise HostUnreachableError(
                f"{docker.name} ({docker.config.url}) sent an event that is not JSON"
            ) from exc
        if is_container_start(event):
            yield event
