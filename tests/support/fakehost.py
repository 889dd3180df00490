"""An in-memory Docker host with the adapter's surface, for unit tests of the shell.

It answers like janitor.dockerhost.DockerHost (the same method names, results and errors),
keeps containers as janitor.model.Container snapshots, and lets a test make any operation
fail or run a meddler right before a given container is re-inspected.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from janitor.dockerhost import DaemonInfo, Engine
from janitor.errors import ActionFailedError, ContainerGoneError
from janitor.model import Container, NamespaceUser, Selector, State, Summary
from janitor.settings import Settings
from janitor.vocabulary import Detail

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MANAGED = {"janitor.managed": "true"}
LogEvents = list[dict[str, Any]]


def container(
    name: str,
    state: State = State.EXITED,
    *,
    age: timedelta = timedelta(hours=3),
    labels: dict[str, str] | None = None,
    restart_policy: str = "",
) -> Container:
    """A managed container created, started and (unless running) finished `age` ago."""
    at = NOW - age
    return Container(
        id=(name.encode().hex() * 64)[:64],
        name=name,
        state=state,
        labels=MANAGED if labels is None else labels,
        created_at=at,
        started_at=None if state == State.CREATED else at,
        finished_at=at if state in (State.EXITED, State.DEAD) else None,
        restart_policy=restart_policy,
    )


class FakeHost:
    """DockerHost's surface over a dict of containers; `failures` maps operation -> error."""

    def __init__(
        self, containers: Iterable[Container] = (), *, name: str = "alpha", daemon_id: str = "A"
    ) -> None:
        self.name = name
        self.daemon_id = daemon_id
        self.now = NOW
        self.containers = {c.id: c for c in containers}
        self.failures: dict[str, Exception] = {}
        self.calls: Counter[str] = Counter()
        self.starts: list[datetime] = []
        # container id -> called once, right before that container's second inspect
        self.meddlers: dict[str, Callable[[], None]] = {}
        # called at every inspect: a slow daemon, as a test's clock sees it
        self.on_inspect: Callable[[], None] = lambda: None
        # called at every inspect the holders' dependents reading makes
        self.on_settings_read: Callable[[], None] = lambda: None
        # What each kill says it could not do (an engine that keeps restart policies).
        self.kill_caveat: Detail | None = None
        self._inspected: set[str] = set()
        # container id -> the containers it names (`container:` modes, --volumes-from)
        self.joins: dict[str, tuple[str, ...]] = {}
        # containers whose namespace settings inspect cannot read
        self.unreadable: set[str] = set()

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        return None

    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if operation in self.failures:
            raise self.failures[operation]

    def info(self) -> DaemonInfo:
        self._call("info")
        return DaemonInfo(
            id=self.daemon_id,
            name=self.name,
            now=self.now,
            containers=len(self.containers),
            server_version="20.10.24",
            engine=Engine("Docker", "20.10.24", "1.41"),
        )

    def list_containers(self, selector: Selector) -> list[Summary]:
        self._call("list")
        return [
            Summary(c.id, c.name, c.state, c.labels, c.created_at or NOW)
            for c in self.containers.values()
            if selector.matches(c.labels)
        ]

    def inspect(self, container_id: str) -> Container:
        if container_id in self._inspected and container_id in self.meddlers:
            self.meddlers.pop(container_id)()
        self._inspected.add(container_id)
        self.on_inspect()
        self._call("inspect")
        if container_id not in self.containers:
            raise ContainerGoneError(f"No such container: {container_id}")
        joins = self.joins.get(container_id, ())
        return dataclasses.replace(self.containers[container_id], namespace_references=joins)

    def list_namespace_users(self, *, since: str | None = None) -> list[NamespaceUser]:
        """Newest first, as dockerd lists; `since` lists those created after that one."""
        self._call("list")
        newest_first = list(reversed(self.containers.values()))
        if since is not None:
            if since not in self.containers:
                raise ActionFailedError(f"list failed with 500: no such container {since}")
            newest_first = newest_first[: [c.id for c in newest_first].index(since)]
        return [NamespaceUser(c.id, c.name, c.state, ()) for c in newest_first]

    def namespace_references(self, container_id: str) -> tuple[str, ...]:
        self.on_settings_read()
        self._call("inspect")
        if container_id in self.unreadable:
            raise ActionFailedError("inspect failed with 500 Internal Server Error")
        if container_id not in self.containers:
            raise ContainerGoneError(f"No such container: {container_id}")
        return self.joins.get(container_id, ())

    def kill(self, current: Container, stop_timeout: timedelta) -> Detail | None:
        del stop_timeout
        self._call("stop")
        self.containers[current.id] = dataclasses.replace(
            current, state=State.EXITED, finished_at=self.now
        )
        return self.kill_caveat

    def remove(self, container_id: str, *, volumes: bool) -> None:
        del volumes
        self._call("remove")
        if self.containers.pop(container_id, None) is None:
            raise ContainerGoneError(f"No such container: {container_id}")

    def starts_between(self, since: datetime, until: datetime) -> list[datetime]:
        self._call("events")
        return [at for at in self.starts if since <= at <= until]

    def compose_projects_of(self, container_ids: frozenset[str]) -> frozenset[str]:
        """No compose projects here; it inspects the janitor's own containers as Docker's does."""
        for container_id in container_ids:
            self._call("inspect")
            del container_id
        return frozenset()


def emitted(logs: LogEvents, event: str, **fields: object) -> list[dict[str, Any]]:
    """The captured lines of `event` that carry `fields`; fails when there is none."""
    found = [
        e for e in logs if e["event"] == event and all(e.get(k) == v for k, v in fields.items())
    ]
    assert found, f"no {event} {fields} among {[(e['event'], e.get('detail')) for e in logs]}"
    return found


def settings_for(fake: FakeHost, **overrides: Any) -> Settings:
    """Settings that name the fake host, as JANITOR_HOSTS would."""
    return Settings(hosts=f"{fake.name}=unix:///run/fake.sock", **overrides)
