"""Reading who depends on whom on one host, for the holder rules (`janitor.holders`).

One unfiltered list call shows every container and the network it joins; the PID, IPC and
--volumes-from settings come from inspect, cached per container id for the life of the
process (they cannot change after creation). It decides nothing.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from janitor.errors import ContainerError, ContainerGoneError
from janitor.holders import Dependents, dependents
from janitor.model import NamespaceUser

# Per host name, container id -> the references only inspect shows. Shared by every sweep of
# the process; pruned to what the host's latest list shows.
_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {}
_SETTINGS_LOCK = threading.Lock()
# What inspect said about one container's settings; None: they could not be read.
_Answer = tuple[str, ...] | None | ContainerGoneError


class NamespaceSource(Protocol):
    name: str

    def list_namespace_users(self) -> list[NamespaceUser]: ...

    def namespace_references(self, container_id: str) -> tuple[str, ...]: ...


class DependencyReader:
    """Who depends on whom on one host; readings shared by the re-checks that can share one."""

    def __init__(self, docker: NamespaceSource, *, concurrency: int) -> None:
        self.docker = docker
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._latest: Dependents | None = None
        self._latest_started = 0.0

    def read(self) -> Dependents:
        return self.fresh_since(time.monotonic())

    def fresh_since(self, instant: float) -> Dependents:
        """A reading whose list call started at or after `instant` (time.monotonic()).

        Re-checks running side by side wait for one reading instead of each listing the host:
        as strong as a list of their own, since it started after they did.
        """
        with self._lock:
            if self._latest is None or self._latest_started < instant:
                started = time.monotonic()
                self._latest, self._latest_started = self._read(), started
            return self._latest

    def _read(self) -> Dependents:
        listed = self.docker.list_namespace_users()
        settings, gone = self._settings([u.id for u in listed])
        return dependents(
            NamespaceUser(u.id, u.name, u.state, _combined(u.references, settings[u.id]))
            for u in listed
            if u.id not in gone
        )

    def _settings(self, ids: list[str]) -> tuple[dict[str, tuple[str, ...] | None], set[str]]:
        """Each listed container's inspect-only references, and the ones removed since."""
        host = self.docker.name
        listed = set(ids)
        with _SETTINGS_LOCK:
            cached = {i: s for i, s in _SETTINGS.get(host, {}).items() if i in listed}
            _SETTINGS[host] = cached
        settings: dict[str, tuple[str, ...] | None] = dict(cached)
        gone: set[str] = set()
        missing = [i for i in ids if i not in cached]
        if missing:
            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="namespaces") as pool:
                answers = list(pool.map(self._inspect, missing))
            for container_id, answer in zip(missing, answers, strict=True):
                if isinstance(answer, ContainerGoneError):
                    gone.add(container_id)
                else:
                    settings[container_id] = answer
            with _SETTINGS_LOCK:
                _SETTINGS.setdefault(host, {}).update(
                    {i: s for i in missing if (s := settings.get(i)) is not None}
                )
        return settings, gone

    def _inspect(self, container_id: str) -> _Answer:
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
