"""The Docker adapter against a fake daemon: what each call returns, and what each failure
of each call becomes: a host-level error, or one container's outcome."""

from __future__ import annotations

import gc
import json
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from support.fakedaemon import (
    CONTAINER_ID,
    CUT,
    DROP,
    EVENT_AT_NS,
    EVENTS,
    HANG,
    INFO,
    INSPECT,
    LIST,
    NO_ROUTE,
    PING,
    REMOVE,
    STOP,
    UPDATE,
    FakeDaemon,
    Reply,
    error_reply,
    gone_reply,
    healthy_replies,
    json_reply,
    ping_reply,
    text_reply,
)

from janitor.dockerhost import DockerHost, parse_instant
from janitor.errors import (
    ActionFailedError,
    ContainerConflictError,
    ContainerGoneError,
    DaemonError,
    HostUnreachableError,
    JanitorError,
    UnsupportedByEngineError,
)
from janitor.model import Container, HostConfig, Selector
from janitor.vocabulary import Detail

TIMEOUT = timedelta(seconds=0.5)
HOST = "alpha"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _ghost(restart_policy: str) -> Container:
    return Container(
        id=CONTAINER_ID,
        name="ghost",
        state="running",
        labels={},
        created_at=None,
        started_at=None,
        finished_at=None,
        restart_policy=restart_policy,
    )


@dataclass(frozen=True)
class Call:
    route: str
    run: Callable[[DockerHost], object]
    host_level: bool


CALLS = {
    # The client asks /_ping for the API version when it is made, before anything else.
    "version": Call(PING, lambda docker: docker.info(), host_level=True),
    "info": Call(INFO, lambda docker: docker.info(), host_level=True),
    "list": Call(
        LIST, lambda docker: docker.list_containers(Selector("janitor.managed")), host_level=True
    ),
    "events": Call(
        EVENTS,
        lambda docker: docker.starts_between(NOW - timedelta(minutes=5), NOW),
        host_level=True,
    ),
    "inspect": Call(INSPECT, lambda docker: docker.inspect(CONTAINER_ID), host_level=False),
    "update": Call(
        UPDATE, lambda docker: docker.kill(_ghost("always"), timedelta(0)), host_level=False
    ),
    "stop": Call(STOP, lambda docker: docker.kill(_ghost("no"), timedelta(0)), host_level=False),
    "remove": Call(
        REMOVE, lambda docker: docker.remove(CONTAINER_ID, volumes=True), host_level=False
    ),
}


@dataclass(frozen=True)
class Failure:
    reply: Reply
    says: str  # what the daemon's answer (or the transport) says, found in the message
    on_host_call: type[JanitorError]
    on_container_call: type[JanitorError]


FAILURES = {
    "500": Failure(
        error_reply(500, "daemon busy: context deadline exceeded"),
        "500 Internal Server Error: daemon busy: context deadline exceeded",
        DaemonError,
        ActionFailedError,
    ),
    "404 no such container": Failure(
        gone_reply(), f"No such container: {CONTAINER_ID}", DaemonError, ContainerGoneError
    ),
    "404 route missing (Podman < 5.1)": Failure(
        NO_ROUTE, "404 Not Found: 404 page not found", DaemonError, UnsupportedByEngineError
    ),
    "404 route missing (dockerd)": Failure(
        error_reply(404, "page not found"),
        "404 Not Found: page not found",
        DaemonError,
        UnsupportedByEngineError,
    ),
    "404 of another kind": Failure(
        error_reply(404, "no such exec instance"),
        "404 Not Found: no such exec instance",
        DaemonError,
        ActionFailedError,
    ),
    "409": Failure(
        error_reply(409, "You cannot remove a running container"),
        "You cannot remove a running container",
        DaemonError,
        ContainerConflictError,
    ),
    "hang": Failure(HANG, "timed out", HostUnreachableError, HostUnreachableError),
    "cut mid-answer": Failure(CUT, "did not answer", HostUnreachableError, HostUnreachableError),
    "closed unanswered": Failure(
        DROP, "did not answer", HostUnreachableError, HostUnreachableError
    ),
}


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    with closing(FakeDaemon()) as fake:
        yield fake


@pytest.fixture
def docker(daemon: FakeDaemon) -> Iterator[DockerHost]:
    with DockerHost(HostConfig(HOST, daemon.url), timeout=TIMEOUT) as host:
        yield host


# A kill that meets a missing update route stops the ghost anyway (tested below).
CALLS_AND_FAILURES = [
    (operation, failure_name)
    for operation in CALLS
    for failure_name in FAILURES
    if not (
        operation == "update"
        and FAILURES[failure_name].on_container_call is UnsupportedByEngineError
    )
]


@pytest.mark.parametrize(("operation", "failure_name"), CALLS_AND_FAILURES)
def test_every_failure_of_every_call_becomes_a_named_error(
    daemon: FakeDaemon, docker: DockerHost, operation: str, failure_name: str
) -> None:
    call, failure = CALLS[operation], FAILURES[failure_name]
    daemon.answer(call.route, failure.reply)
    expected = failure.on_host_call if call.host_level else failure.on_container_call

    with pytest.raises(JanitorError) as raised:
        call.run(docker)

    assert type(raised.value) is expected, raised.value
    message = str(raised.value)
    assert failure.says in message
    assert operation in message
    if call.host_level or expected is HostUnreachableError:
        assert f"{HOST} ({daemon.url})" in message
    if expected is DaemonError:
        assert f"answered {operation} with {failure.reply.status}" in message


def test_a_missing_route_names_the_route_and_says_the_engine_lacks_it(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    daemon.answer(REMOVE, NO_ROUTE)
    with pytest.raises(UnsupportedByEngineError) as raised:
        docker.remove(CONTAINER_ID, volumes=True)
    assert str(raised.value) == (
        "the engine has no DELETE /v1.41/containers/{id} route, so it cannot remove "
        "(404 Not Found: 404 page not found)"
    )


@pytest.mark.parametrize("no_route", [NO_ROUTE, error_reply(404, "page not found")])
def test_an_engine_without_the_update_route_kills_and_says_the_policy_was_kept(
    daemon: FakeDaemon, docker: DockerHost, no_route: Reply
) -> None:
    daemon.answer(UPDATE, no_route)
    assert docker.kill(_ghost("always"), timedelta(0)) is Detail.RESTART_POLICY_KEPT
    assert "POST /containers/{id}/stop" in daemon.routes_seen()


def test_a_cleared_restart_policy_is_no_caveat(daemon: FakeDaemon, docker: DockerHost) -> None:
    assert docker.kill(_ghost("always"), timedelta(0)) is None
    assert daemon.routes_seen()[-2:] == [UPDATE, STOP]


def test_a_healthy_daemon_answers_each_call(daemon: FakeDaemon, docker: DockerHost) -> None:
    info = docker.info()
    assert (info.id, info.name, info.server_version) == ("FAKE:DAEMON:ID", "fake", "20.10.24")
    assert info.now == datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)

    [summary] = docker.list_containers(Selector("janitor.managed", "true"))
    assert (summary.id, summary.name, summary.state) == (CONTAINER_ID, "ghost", "running")
    container = docker.inspect(CONTAINER_ID)
    assert container.restart_policy == "always"
    assert container.started_at == datetime(2026, 12, 1, 9, 0, 0, 500000, tzinfo=UTC)
    assert container.finished_at is None  # Docker's zero time

    assert (
        docker.starts_between(NOW - timedelta(minutes=5), NOW)
        == [datetime.fromtimestamp(EVENT_AT_NS / 1e9, tz=UTC)] * 2
    )
    docker.kill(container, timedelta(seconds=1.2))
    docker.remove(CONTAINER_ID, volumes=True)

    by_route = {seen.route: seen for seen in daemon.seen}
    assert json.loads(by_route[LIST].query["filters"][0]) == {"label": ["janitor.managed=true"]}
    assert by_route[LIST].query["all"] == ["1"]
    events = by_route[EVENTS].query
    assert json.loads(events["filters"][0]) == {"type": ["container"], "event": ["start"]}
    assert events["until"] == [str(int(NOW.timestamp()))]
    assert json.loads(by_route[UPDATE].body) == {"RestartPolicy": {"Name": "no"}}
    assert by_route[STOP].query["t"] == ["2"]  # whole seconds, rounded up
    assert (by_route[REMOVE].query["v"], by_route[REMOVE].query["force"]) == (["True"], ["False"])


def test_a_container_without_a_resurrecting_policy_is_stopped_without_an_update(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    docker.kill(_ghost("unless-stopped"), timedelta(0))
    assert UPDATE not in daemon.routes_seen()
    assert STOP in daemon.routes_seen()


def test_info_without_the_daemon_clock_is_a_daemon_error(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    daemon.answer(INFO, json_reply({"ID": "X", "Name": "fake"}))
    with pytest.raises(DaemonError, match="no SystemTime"):
        docker.info()


def test_one_unix_socket_serves_every_call(daemon: FakeDaemon, docker: DockerHost) -> None:
    for _ in range(20):
        docker.inspect(CONTAINER_ID)
    # The SDK's version check has its own socket, closed when the pool replaces its adapter.
    assert daemon.connections == 2


def test_a_keep_alive_connection_the_daemon_closed_is_replaced_once(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    docker.inspect(CONTAINER_ID)
    # As the daemon closing an idle connection: the next call meets a dead socket.
    lean = docker._lean
    assert lean is not None
    [idle] = lean._idle
    assert idle.sock is not None
    idle.sock.shutdown(socket.SHUT_RDWR)
    assert docker.inspect(CONTAINER_ID).id == CONTAINER_ID
    assert daemon.connections == 3
    # A removal, which is never asked twice, is sent on a live connection in the first place.
    [idle] = lean._idle
    assert idle.sock is not None
    idle.sock.shutdown(socket.SHUT_RDWR)
    docker.remove(CONTAINER_ID, volumes=True)
    assert daemon.routes_seen().count(REMOVE) == 1
    assert daemon.connections == 4


def test_a_dropped_answer_on_a_reused_connection_is_asked_again_for_a_read_never_a_remove(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    # The daemon closing the connection between the pool's look and the request: a read is
    # asked once more, a removal never (a second DELETE after a first that worked reads 404,
    # "gone", where the janitor removed it).
    docker.inspect(CONTAINER_ID)
    daemon.answer(INSPECT, DROP)
    daemon.answer(REMOVE, DROP)
    with pytest.raises(HostUnreachableError):
        docker.inspect(CONTAINER_ID)
    assert daemon.routes_seen().count(INSPECT) == 3
    daemon.answer(INSPECT, healthy_replies()[INSPECT])
    docker.inspect(CONTAINER_ID)
    with pytest.raises(HostUnreachableError):
        docker.remove(CONTAINER_ID, volumes=True)
    assert daemon.routes_seen().count(REMOVE) == 1


def test_short_lived_thread_pools_share_the_keep_alive_connections(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    # A sweep starts a pool per inspect phase and per re-check batch: their threads come
    # and go, the sockets must not stay behind with each of them.
    for _ in range(20):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: docker.inspect(CONTAINER_ID), range(8)))
    lean = docker._lean
    assert lean is not None
    # No more than were ever in flight together (before: one per thread, 80), plus the SDK's
    # version check socket, as above; every one of them is kept, none is left behind.
    assert len(lean._idle) <= 4
    assert daemon.connections == 1 + len(lean._idle)


@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
def test_a_missing_socket_is_an_unreachable_host(daemon: FakeDaemon) -> None:
    config = HostConfig(HOST, f"unix://{daemon.dir}/missing.sock")
    with DockerHost(config, timeout=TIMEOUT) as docker:
        try:
            docker.info()
        except HostUnreachableError as exc:
            message = str(exc)
        else:
            pytest.fail("info() reached a socket that does not exist")
    # docker-py leaves the socket of a failed unix connect to the garbage collector.
    gc.collect()
    assert f"{HOST} (unix://{daemon.dir}/missing.sock) did not answer version" in message


PODMAN_PING = ping_reply(("Server", "Libpod/4.3.1 (linux)"), ("Libpod-Api-Version", "4.3.1"))


def _podman_info(random_id: str, **changes: str) -> Reply:
    info = {
        "ID": random_id,
        "Name": "build-7",
        "DockerRootDir": "/var/lib/containers/storage",
        "SystemTime": "2026-12-01T12:00:00Z",
        "ServerVersion": "4.3.1",
    }
    return json_reply(info | changes)


def test_podman_is_known_by_its_host_name_and_graph_root_not_its_random_id(
    daemon: FakeDaemon,
) -> None:
    daemon.answer(PING, PODMAN_PING)
    identities = []
    for random_id in ("0ce2767d-d7b5", "226fe20b-fb0b"):
        daemon.answer(INFO, _podman_info(random_id))
        # A new client each time, as each tick makes: the identity survives reconnects.
        with DockerHost(HostConfig(HOST, daemon.url), timeout=TIMEOUT) as docker:
            info = docker.info()
        identities.append(info.id)
    assert identities == ["podman:build-7:/var/lib/containers/storage"] * 2
    assert str(info.engine) == "Podman 4.3.1 (API 1.41)"
    daemon.answer(INFO, _podman_info("0ce2767d-d7b5", DockerRootDir="/srv/other-storage"))
    with DockerHost(HostConfig(HOST, daemon.url), timeout=TIMEOUT) as docker:
        assert docker.info().id == "podman:build-7:/srv/other-storage"


def test_podman_events_are_read_up_to_now_and_cut_at_the_window_here(daemon: FakeDaemon) -> None:
    daemon.answer(PING, PODMAN_PING)
    late = EVENT_AT_NS + 3 * 10**9
    lines = [
        json.dumps({"Type": "container", "Action": "start", "timeNano": at})
        for at in (EVENT_AT_NS, late)
    ]
    daemon.answer(EVENTS, Reply(200, ("\n".join(lines) + "\n").encode(), chunked=True))
    until = datetime.fromtimestamp(EVENT_AT_NS // 10**9, tz=UTC)
    with DockerHost(HostConfig(HOST, daemon.url), timeout=TIMEOUT) as docker:
        starts = docker.starts_between(until - timedelta(minutes=1), until)
    assert starts == [datetime.fromtimestamp(EVENT_AT_NS / 1e9, tz=UTC)]
    [query] = [seen.query for seen in daemon.seen if seen.route == EVENTS]
    assert query["stream"] == ["false"]
    assert "until" not in query


def test_docker_is_known_by_its_id_and_named_docker(docker: DockerHost) -> None:
    info = docker.info()
    assert info.id == "FAKE:DAEMON:ID"
    assert str(info.engine) == "Docker 20.10.24 (API 1.41)"


def test_events_the_engine_did_not_filter_are_filtered_here(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    # Podman 4.3 ignores the `event` filter: every event of the window comes back.
    def event(kind: str, action: str) -> str:
        return json.dumps({"Type": kind, "Action": action, "timeNano": EVENT_AT_NS})

    lines = [event("container", "start"), event("container", "died"), event("image", "start")]
    daemon.answer(EVENTS, Reply(200, ("\n".join(lines) + "\n").encode(), chunked=True))
    starts = docker.starts_between(NOW - timedelta(minutes=5), NOW)
    assert starts == [datetime.fromtimestamp(EVENT_AT_NS / 1e9, tz=UTC)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0001-01-01T00:00:00Z", None),  # Docker's "never happened"
        ("", None),
        (None, None),
        ("2026-12-01T09:00:00.123456789Z", datetime(2026, 12, 1, 9, 0, 0, 123456, tzinfo=UTC)),
        ("2026-12-01T10:00:00+01:00", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
    ],
)
def test_parse_instant_reads_the_zero_time_as_unknown(
    text: str | None, expected: datetime | None
) -> None:
    assert parse_instant(text) == expected


def test_an_inspect_answer_that_is_not_json_is_an_unreachable_host(
    daemon: FakeDaemon, docker: DockerHost
) -> None:
    daemon.answer(INSPECT, text_reply(200, "<html>a proxy's page</html>"))
    with pytest.raises(HostUnreachableError):
        docker.inspect(CONTAINER_ID)
    # That connection is not reused; the next answer is read on a fresh one.
    daemon.answer(INSPECT, healthy_replies()[INSPECT])
    assert docker.inspect(CONTAINER_ID).id == CONTAINER_ID
