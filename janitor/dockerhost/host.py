"""One Docker daemon, as the janitor sees it: its clock, its containers and the two things
it does to them (kill, remove), through one client with an explicit URL, timeout and TLS.

It lists, inspects, kills and removes exactly what it is told; it decides nothing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.tls

from janitor.dockerhost.transport import PinnedAPIClient, fault, tune_unix_transport
from janitor.errors import ContainerGoneError, DaemonError
from janitor.holders import references
from janitor.model import Container, HostConfig, NamespaceUser, Selector, Summary
from janitor.vocabulary import COMPOSE_PROJECT_LABEL

T = TypeVar("T")

# Docker's "never happened" instant, e.g. FinishedAt of a container that never stopped.
_ZERO_YEAR = 1
RESTART_POLICIES_THAT_RESURRECT = frozenset({"always", "on-failure"})
_CONTAINER_ID_IN_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$")
_FILES_DOCKER_BINDS_INTO_CONTAINERS = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    id: str
    name: str
    now: datetime
    containers: int
    server_version: str
    # Where the daemon keeps its data, on its own filesystem (empty when it does not say).
    docker_root: str = ""


def parse_instant(text: str | None) -> datetime | None:
    """Docker's RFC 3339 instant (nanoseconds allowed) as an aware datetime; zero -> None."""
    if not text:
        return None
    instant = datetime.fromisoformat(text)
    if instant.year == _ZERO_YEAR:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC)


class DockerHost:
    """A connection to one Docker daemon, with an explicit URL, timeout and TLS."""

    def __init__(self, config: HostConfig, *, timeout: timedelta, max_pool_size: int = 10) -> None:
        self.config = config
        self.name = config.name
        self._timeout = timeout.total_seconds()
        self._max_pool_size = max_pool_size
        self._api: docker.APIClient | None = None
        self._lock = threading.Lock()
        # How many API calls each operation made: the idle-cost benchmark reads it.
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None

    def _client(self) -> docker.APIClient:
        with self._lock:
            if self._api is None:
                tls: docker.tls.TLSConfig | bool = False
                if self.config.tls is not None:
                    cert = None
                    if self.config.tls.client_cert and self.config.tls.client_key:
                        cert = (str(self.config.tls.client_cert), str(self.config.tls.client_key))
                    tls = docker.tls.TLSConfig(
                        client_cert=cert, ca_cert=str(self.config.tls.ca_cert), verify=True
                    )
                api = self._guard(
                    "version",
                    lambda: PinnedAPIClient(
                        base_url=self.config.url,
                        # The stubs say int; requests takes fractional seconds as well.
                        timeout=self._timeout,  # type: ignore[arg-type]
                        tls=tls,
                        max_pool_size=self._max_pool_size,
                    ),
                )
                if self.config.url.startswith("unix://"):
                    socket_path = self.config.url.removeprefix("unix://")
                    tune_unix_transport(api, socket_path, self._timeout, self._max_pool_size)
                self._api = api
            return self._api

    def _guard(self, operation: str, call: Callable[[], T]) -> T:
        """Run one API call; whatever the SDK, requests or the socket raise becomes ours."""
        self.calls[operation] += 1
        try:
            return call()
        # requests' errors are OSErrors too: this also takes a socket that vanished mid-call,
        # which urllib3 lets through bare.
        except (docker.errors.DockerException, OSError) as exc:
            raise fault(f"{self.name} ({self.config.url})", operation, exc) from exc

    def info(self) -> DaemonInfo:
        api = self._client()
        raw: dict[str, Any] = self._guard("info", api.info)
        now = parse_instant(raw.get("SystemTime"))
        if now is None:
            raise DaemonError(f"{self.name} ({self.config.url}) reported no SystemTime in /info")
        return DaemonInfo(
            id=str(raw.get("ID", "")),
            name=str(raw.get("Name", "")),
            now=now,
            containers=int(raw.get("Containers", 0)),
            server_version=str(raw.get("ServerVersion", "")),
            docker_root=str(raw.get("DockerRootDir", "")),
        )

    def list_containers(self, selector: Selector) -> list[Summary]:
        """Every container the selector matches, from one list call (no inspect)."""
        api = self._client()
        filters = {} if selector.matches_everything else {"label": [str(selector)]}
        raw: list[dict[str, Any]] = self._guard(
            "list", lambda: api.containers(all=True, filters=filters)
        )
        return [
            Summary(
                id=item["Id"],
                name=(item.get("Names") or ["/"])[0].lstrip("/"),
                state=item.get("State", ""),
                labels=item.get("Labels") or {},
                created_at=datetime.fromtimestamp(int(item.get("Created", 0)), tz=UTC),
            )
            for item in raw
        ]

    def inspect(self, container_id: str) -> Container:
        api = self._client()
        raw: dict[str, Any] = self._guard("inspect", lambda: api.inspect_container(container_id))
        state = raw.get("State") or {}
        host_config = raw.get("HostConfig") or {}
        return Container(
            id=raw["Id"],
            name=str(raw.get("Name", "")).lstrip("/"),
            state=state.get("Status", ""),
            labels=(raw.get("Config") or {}).get("Labels") or {},
            created_at=parse_instant(raw.get("Created")),
            started_at=parse_instant(state.get("StartedAt")),
            finished_at=parse_instant(state.get("FinishedAt")),
            auto_remove=bool(host_config.get("AutoRemove")),
            restart_policy=str((host_config.get("RestartPolicy") or {}).get("Name") or ""),
            namespace_references=_namespace_references(host_config),
        )

    def list_namespace_users(self, *, since: str | None = None) -> list[NamespaceUser]:
        """Every container on the host, whatever the selector, newest first, with the container
        whose network it joins: the list call carries HostConfig.NetworkMode, inspect the
        other modes. With `since` (a container id), only those created after it: dockerd
        stops listing there, so the call costs what is new; a ContainerError when that
        container is gone (dockerd answers 500 "no such container")."""
        api = self._client()
        filters = {} if since is None else {"since": since}
        operation = "list" if since is None else "list-since"
        raw: list[dict[str, Any]] = self._guard(
            operation, lambda: api.containers(all=True, filters=filters)
        )
        return [
            NamespaceUser(
                id=item["Id"],
                name=(item.get("Names") or ["/"])[0].lstrip("/"),
                state=item.get("State", ""),
                references=references([(item.get("HostConfig") or {}).get("NetworkMode") or ""]),
            )
            for item in raw
        ]

    def namespace_references(self, container_id: str) -> tuple[str, ...]:
        """The containers whose namespaces it joins or whose volumes it mounts."""
        api = self._client()
        raw: dict[str, Any] = self._guard("inspect", lambda: api.inspect_container(container_id))
        return _namespace_references(raw.get("HostConfig") or {})

    def kill(self, container: Container, stop_timeout: timedelta) -> None:
        """Stop a ghost for good: SIGTERM, SIGKILL after stop_timeout, no resurrection."""
        api = self._client()
        if container.restart_policy in RESTART_POLICIES_THAT_RESURRECT:
            # A SIGKILLed container with these policies comes back when the daemon restarts.
            self._guard(
                "update",
                # The stubs omit "no", the value that turns restarting off.
                lambda: api.update_container(
                    container.id,
                    restart_policy={"Name": "no"},  # type: ignore[arg-type]
                ),
            )
        seconds = math.ceil(stop_timeout.total_seconds())
        self._guard("stop", lambda: api.stop(container.id, timeout=seconds))

    def remove(self, container_id: str, *, volumes: bool) -> None:
        """Remove a stopped container; never forced, so a running one is refused (409)."""
        api = self._client()
        self._guard("remove", lambda: api.remove_container(container_id, v=volumes, force=False))

    def starts_between(self, since: datetime, until: datetime) -> list[datetime]:
        """When containers were started in [since, until], from the daemon's event buffer.

        The daemon replays only its last events (256 in 20.10), so under heavy churn the
        answer covers a shorter span than asked: callers measure rates over what came back.
        """
        api = self._client()

        def fetch() -> list[datetime]:
            # The SDK's events() streams with no timeout at all, so a frozen daemon held its
            # caller for good; a window that has ended is one finite answer, read whole
            # under the client's timeout.
            response = api.get(
                f"{api.base_url}/v{api.api_version}/events",
                params={
                    "since": str(int(since.timestamp())),
                    "until": str(int(until.timestamp())),
                    "filters": json.dumps({"type": ["container"], "event": ["start"]}),
                },
                timeout=self._timeout,
            )
            response.raise_for_status()
            # Docker and Podman write one JSON object a line.
            events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
            return [datetime.fromtimestamp(e["timeNano"] / 1e9, tz=UTC) for e in events]

        return self._guard("events", fetch)

    def compose_projects_of(self, container_ids: frozenset[str]) -> frozenset[str]:
        """The compose projects of those of our own containers that live on this host."""
        projects = set()
        for container_id in container_ids:
            try:
                labels = self.inspect(container_id).labels
            except ContainerGoneError:
                continue
            if project := labels.get(COMPOSE_PROJECT_LABEL):
                projects.add(project)
        return frozenset(projects)


def _namespace_references(host_config: dict[str, Any]) -> tuple[str, ...]:
    modes = [str(host_config.get(mode) or "") for mode in ("NetworkMode", "PidMode", "IpcMode")]
    return references(modes, host_config.get("VolumesFrom") or ())


def own_container_ids(mountinfo: Path = Path("/proc/self/mountinfo")) -> frozenset[str]:
    """The id of the container this process runs in, if any, from its bind mounts.

    Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from
    <data-root>/containers/<id>/, which works on cgroup v1 and v2 alike. Only those mount
    points count: on the host itself every running container's shm mount lives under
    .../containers/<id>/ too, and must not make the janitor spare them all.
    """
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return frozenset()
    ids = set()
    for line in lines:
        fields = line.split()
        # mountinfo: id parent major:minor root mount-point options ...
        is_docker_bind = len(fields) > 4 and fields[4] in _FILES_DOCKER_BINDS_INTO_CONTAINERS
        if is_docker_bind and (match := _CONTAINER_ID_IN_MOUNT.search(fields[3])):
            ids.add(match.group(1))
    return frozenset(ids)
