"""The sweep's hot calls (inspect, remove) to a unix-socket daemon, without the SDK's layers.

A sweep over a backlog makes three calls per container; through docker-py, requests and
urllib3 each paid more client CPU building, sending and checking the request than the daemon
spent answering it (py-spy: about two thirds of the client's sweep CPU). Here one keep-alive
`http.client` connection per thread speaks to the socket, and each answer is parsed once. A
failure is raised as the error requests would have raised, so `transport.fault` maps it the
same way as every other call's: a 404 is read, a timeout is a daemon that did not answer.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
from typing import Any
from urllib.parse import quote, urlencode

import requests
import requests.exceptions
import requests.structures


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class LeanUnixClient:
    """GET and DELETE on one daemon's unix socket under the API version the SDK negotiated.

    Idle keep-alive connections wait in a pool that any thread takes from, so the sockets
    open are never more than the calls that were once in flight together, however many
    short-lived thread pools a sweep starts (one per inspect phase, per re-check batch).
    """

    def __init__(self, socket_path: str, api_version: str, timeout: float) -> None:
        self._socket_path = socket_path
        self._prefix = f"/v{api_version}"
        self._timeout = timeout
        self._lock = threading.Lock()
        self._idle: list[_UnixConnection] = []

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/containers/{quote(container_id)}/json")
        return answer

    def remove_container(self, container_id: str, *, volumes: bool) -> None:
        # Spelt as the SDK sends it (both engines read it so); never forced, so a running
        # container is refused (409).
        query = {"v": str(volumes), "link": "False", "force": "False"}
        self._call("DELETE", f"/containers/{quote(container_id)}", query)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _call(self, method: str, path: str, query: dict[str, str] | None = None) -> Any:
        url = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        connection, reused = self._take()
        try:
            try:
                answer = self._exchange(connection, method, url)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if not reused or method != "GET":
                    raise
                # The daemon closed the idle connection between _take's look and the request:
                # nothing was answered, and a read may be asked again. A DELETE is not: had
                # the first one removed the container, the second's 404 would read as "gone".
                connection.close()
                connection = self._new()
                answer = self._exchange(connection, method, url)
        except requests.exceptions.HTTPError:
            # The daemon's error answer, already as requests has it, read to its end: the
            # connection can serve the next call.
            self._give_back(connection)
            raise
        except TimeoutError as exc:
            # Never reused: a late answer must not be read as the next call's.
            connection.close()
            raise requests.exceptions.ReadTimeout(f"{method} {path}: {exc}") from exc
        except (http.client.HTTPException, OSError, ValueError) as exc:
            # ValueError: an answer that is not JSON, as the SDK's path reports it too.
            connection.close()
            raise requests.exceptions.ConnectionError(f"{method} {path}: {exc}") from exc
        self._give_back(connection)
        return answer

    def _take(self) -> tuple[_UnixConnection, bool]:
        while True:
            with self._lock:
                if not self._idle:
                    return self._new(), False
                connection = self._idle.pop()
            if not _dropped(connection):
                return connection, True
            connection.close()

    def _new(self) -> _UnixConnection:
        return _UnixConnection(self._socket_path, self._timeout)

    def _give_back(self, connection: _UnixConnection) -> None:
        with self._lock:
            self._idle.append(connection)

    def _exchange(self, connection: _UnixConnection, method: str, url: str) -> Any:
        connection.request(method, url, headers={"Host": "docker"})
        response = connection.getresponse()
        body = response.read()
        if response.status >= 400:
            answer = _as_requests(response, body, method, url)
            raise requests.exceptions.HTTPError(
                f"{response.status} {response.reason}", response=answer
            )
        return json.loads(body) if body else None


def _dropped(connection: _UnixConnection) -> bool:
    """Whether the daemon closed an idle connection (a restart): as urllib3 checks before
    reusing one, an idle socket that reads as ready holds only its end, never an answer."""
    if connection.sock is None:
        return True
    # poll, not select: a busy worker's sockets may have descriptors past select's 1024.
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))


def _as_requests(
    response: http.client.HTTPResponse, body: bytes, method: str, url: str
) -> requests.Response:
    """The daemon's error answer as requests holds one, for `transport.fault` to read."""
    answer = requests.Response()
    answer.status_code = response.status
    answer.reason = response.reason
    answer.headers = requests.structures.CaseInsensitiveDict(response.getheaders())
    answer._content = body
    answer.request = requests.Request(method, f"http+docker://localhost{url}").prepare()
    return answer
