"""Reading who depends on whom on one host, for the holder rules (`janitor.holders`).

One unfiltered list call shows every container and the network it joins; the PID, IPC and
--volumes-from settings come from inspect, cached per container id for the life of the
process (they cannot change after creation). No inspect starts past the sweep's deadline: a
container whose settings were not read counts as a dependent of every container (held, never
wrongly acted on), and the next tick reads on from what is cached. It decides nothing.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from janitor.brakes import NOT_REACHED, Unreached
from janitor.errors import ContainerError, ContainerGoneError
from janitor.holders import NO_DEPENDENTS, Dependents, dependents
from janitor.model import Container, NamespaceUser, State

# Per host name, container id -> the references its inspect shows. Shared by every sweep of
# the process; pruned to what the host's latest list shows.
_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {}
_SETTINGS_LOCK = threading.Lock()
# How many of the newest known containers a re-check tries to list from before listing all.
_SINCE_TRIES = 5
# What inspect said about one container's settings; None: they could not be read.
_Answer = tuple[str, ...] | None | ContainerGoneError


class NamespaceSource(Protocol):
    name: str

    def list_namespace_users(self, *, since: str | None = None) -> list[NamespaceUser]: ...

    def namespace_references(self, container_id: str) -> tuple[str, ...]: ...

    def inspect(self, container_id: str) -> Container: ...


class DependencyReader:
    """Who depends on whom on one host: a full reading for the decision, then readings for the
    re-checks that list only what is new and are shared by the re-checks in flight."""

    def __init__(
        self, docker: NamespaceSource, *, concurrency: int, deadline: float | None = None
    ) -> None:
        self.docker = docker
        self.concurrency = concurrency
        # time.monotonic() past which the decision's reading starts no inspect (the re-checks'
        # readings belong to actions already under way and are not cut), and how many
        # inspects it did not start. It is the sweep's own deadline, not the inspects' half
        # of it: a reading that takes that long leaves no time to act, but what it read is
        # cached for the next tick.
        self.deadline = deadline
        self.not_read = 0
        self._lock = threading.Lock()
        # The latest reading, newest container first, and when its list call started.
        self._users: list[NamespaceUser] = []
        self._read_at: float | None = None
        self._found = NO_DEPENDENTS

    def read(self, inspected: Iterable[Container] = ()) -> Dependents:
        """Every container on the host, listed now; the settings of those just `inspected`
        are taken from that inspect rather than asked for again."""
        with _SETTINGS_LOCK:
            cached = _SETTINGS.setdefault(self.docker.name, {})
            cached.update({c.id: c.namespace_references for c in inspected})
        with self._lock:
            started = time.monotonic()
            listed = self.docker.list_namespace_users()
            return self._reading(started, listed, stop_at=self.deadline)

    def current(self, holder_id: str, instant: float) -> Dependents:
        """The holder's dependents as a full reading started at or after `instant` would show
        them (time.monotonic()), states included.

        Only containers created since the latest reading can have become dependents (a
        container's references are fixed at creation): they are listed `since` the newest
        container that reading saw, a call that costs what is new. The holder's dependents
        already known are inspected again for their state.
        """
        with self._lock:
            found = self._found
            if self._read_at is None or self._read_at < instant:
                started = time.monotonic()
                newer = self._created_since()
                if newer is None:
                    found = self._reading(started, self.docker.list_namespace_users())
                elif not newer:
                    # Nothing new since: who depends on whom is what it was (states aside,
                    # which _as_now reads); rebuilding the index per batch made a backlog's
                    # sweep quadratic.
                    self._read_at = started
                else:
                    fresh = {u.id for u in newer}
                    kept = [u for u in self._users if u.id not in fresh]
                    found = self._reading(started, newer, kept)
        return Dependents({holder_id: self._as_now(found.of(holder_id))})

    def _reading(
        self,
        started: float,
        listed: list[NamespaceUser],
        known: Sequence[NamespaceUser] | None = None,
        *,
        stop_at: float | None = None,
    ) -> Dependents:
        """From a list of the whole host, or of those created since (`known` the rest): only
        the whole host's tells which cached settings belong to removed containers. No
        inspect starts past `stop_at`."""
        whole_host = known is None
        settled = self._with_settings(listed, whole_host=whole_host, stop_at=stop_at)
        self._users = settled + list(known or ())
        self._found, self._read_at = dependents(self._users), started
        return self._found

    def _created_since(self) -> list[NamespaceUser] | None:
        """The containers created after the newest one of the latest reading that still
        exists; None when none of the few newest does (then the whole host is listed)."""
        for newest in self._users[:_SINCE_TRIES]:
            try:
                return self.docker.list_namespace_users(since=newest.id)
            except ContainerError:
                continue  # removed since: dockerd cannot list from it
        return None

    def _as_now(self, users: tuple[NamespaceUser, ...]) -> tuple[NamespaceUser, ...]:
        now: list[NamespaceUser] = []
        for user in dict.fromkeys(users):
            try:
                state = self.docker.inspect(user.id).state
            except ContainerGoneError:
                continue
            except ContainerError:
                state = State.RUNNING  # unknown: as if it ran
            now.append(dataclasses.replace(user, state=state))
        return tuple(now)

    def _with_settings(
        self, listed: list[NamespaceUser], *, whole_host: bool, stop_at: float | None
    ) -> list[NamespaceUser]:
        """The listed containers with the references only inspect shows (those removed
        since the list left out)."""
        ids = [u.id for u in listed]
        settings, gone = self._settings(ids, whole_host=whole_host, stop_at=stop_at)
        return [
            NamespaceUser(u.id, u.name, u.state, _combined(u.references, settings[u.id]))
            for u in listed
            if u.id not in gone
        ]

    def _settings(
        self, ids: list[str], *, whole_host: bool, stop_at: float | None
    ) -> tuple[dict[str, tuple[str, ...] | None], set[str]]:
        """Each listed container's inspect-only references, and the ones removed since; the
        cache is pruned to what a list of the whole host shows, never to a `since` list's few
        (which forgot every other container's settings: an inspect of each, per re-check)."""
        host = self.docker.name
        listed = set(ids)
        with _SETTINGS_LOCK:
            known = _SETTINGS.get(host, {})
            cached = {i: s for i, s in known.items() if i in listed}
            if whole_host:
                _SETTINGS[host] = dict(cached)
        settings: dict[str, tuple[str, ...] | None] = dict(cached)
        gone: set[str] = set()
        missing = [i for i in ids if i not in cached]
        if missing:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="namespaces") as pool:
                answers = list(pool.map(lambda i: self._inspect(i, stop_at), missing))
            for container_id, answer in zip(missing, answers, strict=True):
                if isinstance(answer, ContainerGoneError):
                    gone.add(container_id)
                elif answer is NOT_REACHED:
                    settings[container_id] = None
                    self.not_read += 1
                else:
                    settings[container_id] = answer
            with _SETTINGS_LOCK:
                _SETTINGS.setdefault(host, {}).update(
                    {i: s for i in missing if (s := settings.get(i)) is not None}
                )
        return settings, gone

    def _inspect(self, container_id: str, stop_at: float | None) -> _Answer | Unreached:
        if stop_at is not None and time.monotonic() > stop_at:
            return NOT_REACHED
        try:
            return self.docker.namespace_references(container_id)
        except ContainerGoneError as exc:
            return exc
        except ContainerError:
            return None  # unreadable: it counts as a dependent of every container


def _combined(
    listed: tuple[str, ...] | None, inspected: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    if listed is None or inspected is None:
        return None
    return listed + inspected
