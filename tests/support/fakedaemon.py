"""A fake Docker daemon for unit tests of the shell: canned answers on a unix socket.

It serves the routes the adapter uses, with or without the SDK's `/v1.xx` prefix, each from a
`Reply` a test sets with `answer`; it never runs a container. Route names are
"METHOD /path" with the container id written `{id}`, e.g. "POST /containers/{id}/stop".
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import socketserver
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

CONTAINER_ID = "c0ffee" * 10 + "c0de"
DAEMON_TIME = "2026-12-01T12:00:00.123456789Z"
STARTED_AT = "2026-12-01T09:00:00.5Z"
EVENT_AT_NS = 1_796_112_000_123_456_789

PING = "GET /_ping"
VERSION = "GET /version"
INFO = "GET /info"
LIST = "GET /containers/json"
INSPECT = "GET /containers/{id}/json"
UPDATE = "POST /containers/{id}/update"
STOP = "POST /containers/{id}/stop"
REMOVE = "DELETE /containers/{id}"
EVENTS = "GET /events"


@dataclass(frozen=True, slots=True)
class Reply:
    """One canned answer. `hang`: never answer (until the daemon closes); `cut`: send the
    headers and part of the body, then close the socket; `drop`: close without a byte;
    `linger`: send a chunked body and keep the stream open, as a live event stream."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    chunked: bool = False
    hang: bool = False
    cut: bool = False
    drop: bool = False
    linger: bool = False
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(document: Any, status: int = 200, *, chunked: bool = False) -> Reply:
    return Reply(status, json.dumps(document).encode(), chunked=chunked)


def error_reply(status: int, message: str) -> Reply:
    """An error the way Docker (and Podman, for routes it has) sends one."""
    return json_reply({"message": message}, status)


def text_reply(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), content_type="text/plain; charset=utf-8")


def ping_reply(*headers: tuple[str, str]) -> Reply:
    """/_ping's "OK", with the headers that say the API version and which engine this is."""
    return Reply(
        200, b"OK", "text/plain; charset=utf-8", headers=(("Api-Version", "1.41"), *headers)
    )


HANG = Reply(hang=True)
CUT = Reply(body=b'{"message": "half an answ', cut=True)
DROP = Reply(drop=True)
NO_CONTENT = Reply(204, content_type="")
# What Go's net/http answers for a route the router lacks (Podman < 5.1's update).
NO_ROUTE = text_reply(404, "404 page not found")


def gone_reply(container_id: str = CONTAINER_ID) -> Reply:
    return error_reply(404, f"No such container: {container_id}")


def healthy_replies() -> dict[str, Reply]:
    """A Docker 20.10 with one running, restart-always container under management."""
    labels = {"janitor.managed": "true"}
    event = {
        "Type": "container",
        "Action": "start",
        "status": "start",
        "id": CONTAINER_ID,
        "time": EVENT_AT_NS // 10**9,
        "timeNano": EVENT_AT_NS,
    }
    events = (json.dumps(event) + "\n").encode() * 2
    return {
        PING: ping_reply(("Server", "Docker/20.10.24 (linux)")),
        VERSION: json_reply({"ApiVersion": "1.41", "MinAPIVersion": "1.12", "Version": "20.10.24"}),
        INFO: json_reply(
            {
                "ID": "FAKE:DAEMON:ID",
                "Name": "fake",
                "SystemTime": DAEMON_TIME,
                "Containers": 1,
                "ServerVersion": "20.10.24",
            }
        ),
        LIST: json_reply(
            [
                {
                    "Id": CONTAINER_ID,
                    "Names": ["/ghost"],
                    "State": "running",
                    "Labels": labels,
                    "Created": 1_796_100_000,
                }
            ]
        ),
        INSPECT: json_reply(
            {
                "Id": CONTAINER_ID,
                "Name": "/ghost",
                "Created": "2026-12-01T08:59:59Z",
                "State": {
                    "Status": "running",
                    "StartedAt": STARTED_AT,
                    "FinishedAt": "0001-01-01T00:00:00Z",
                },
                "Config": {"Labels": labels},
                "HostConfig": {"AutoRemove": False, "RestartPolicy": {"Name": "always"}},
            }
        ),
        UPDATE: json_reply({"Warnings": []}),
        STOP: NO_CONTENT,
        REMOVE: NO_CONTENT,
        EVENTS: Reply(200, events, chunked=True),
    }


@dataclass(frozen=True, slots=True)
class Seen:
    """One request the daemon received."""

    route: str
    path: str
    query: dict[str, list[str]]
    body: bytes


_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
_CONTAINER_PATH = re.compile(r"^/containers/(?!json$)[^/]+")


def route_of(method: str, path: str) -> str:
    path = _VERSION_PREFIX.sub("", path)
    return f"{method} {_CONTAINER_PATH.sub('/containers/{id}', path)}"


@dataclass
class FakeDaemon:
    """Serves `replies` (a healthy daemon until a test calls `answer`), records every request
    in `seen` and counts the client's `connections`. Use it as `with closing(FakeDaemon())`."""

    replies: dict[str, Reply] = field(default_factory=healthy_replies)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        # Not pytest's tmp_path: a unix socket path must stay under 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="jt-fakedocker-", dir="/tmp"))
        self.socket_path = self.dir / "docker.sock"
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._server = _Server(str(self.socket_path), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def answer(self, route: str, reply: Reply) -> None:
        if route not in self.replies:
            raise KeyError(f"the fake daemon has no route {route!r}; it has {sorted(self.replies)}")
        self.replies[route] = reply

    def routes_seen(self) -> list[str]:
        with self._lock:
            return [request.route for request in self.seen]

    def _connected(self) -> None:
        with self._lock:
            self.connections += 1

    def close(self) -> None:
        self.closing.set()  # wakes the handlers that hang
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _serve(self, handler: _Handler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        url = urlsplit(handler.path)
        route = route_of(handler.command, url.path)
        with self._lock:
            self.seen.append(Seen(route, url.path, parse_qs(url.query), body))
        reply = self.replies.get(route, NO_ROUTE)
        if reply.hang:
            self.closing.wait()
            handler.close_connection = True
            return
        if reply.drop:
            _hang_up(handler)
            return
        # send_response writes the Server header itself, from these two.
        handler.server_version = dict(reply.headers).get("Server", "FakeDaemon")
        handler.sys_version = ""
        handler.send_response(reply.status)
        if reply.content_type:
            handler.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers:
            if name != "Server":
                handler.send_header(name, value)
        if reply.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            # A cut answer promises more than it sends.
            handler.send_header("Content-Length", str(len(reply.body) + (64 if reply.cut else 0)))
        handler.end_headers()
        body = _chunked(reply.body, cut=reply.cut, end=not reply.linger)
        handler.wfile.write(body if reply.chunked else reply.body)
        handler.wfile.flush()
        if reply.linger:
            self.closing.wait()
            handler.close_connection = True
        if reply.cut:
            _hang_up(handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd: the adapter's pool reuses sockets
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._connected()

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib logs the peer's address, which a unix socket does not have.
        return


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, fake: FakeDaemon) -> None:
        self.fake = fake
        super().__init__(path, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out (what the hang is for) leaves a broken pipe behind.
        if isinstance(sys.exception(), (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


def _hang_up(handler: BaseHTTPRequestHandler) -> None:
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def _chunked(body: bytes, *, cut: bool, end: bool = True) -> bytes:
    lines = body.splitlines(keepends=True)
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines)
    if cut:
        return encoded[: len(encoded) // 2]
    return encoded + (b"0\r\n\r\n" if end else b"")
