"""One Docker daemon (or Podman's Docker-compatible service), as the janitor sees it: which
engine it is, its identity, its clock, its containers and the two things it does to them
(kill, remove), through one client with an explicit URL, timeout and TLS.

It lists, inspects, kills and removes exactly what it is told; it decides nothing.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.tls

from janitor.dockerhost.lean import LeanUnixClient
from janitor.dockerhost.transport import PinnedAPIClient, fault, tune_unix_transport
from janitor.errors import ContainerGoneError, DaemonError, UnsupportedByEngineError
from janitor.holders import references
from janitor.model import Container, HostConfig, NamespaceUser, Selector, Summary
from janitor.vocabulary import COMPOSE_PROJECT_LABEL, Detail

T = TypeVar("T")

# Docker's "never happened" instant, e.g. FinishedAt of a container that never stopped.
_ZERO_YEAR = 1
RESTART_POLICIES_THAT_RESURRECT = frozenset({"always", "on-failure"})
_CONTAINER_ID_IN_MOUNT = re.compile(r"/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$")
_FILES_DOCKER_BINDS_INTO_CONTAINERS = frozenset({"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})


@dataclass(frozen=True, slots=True)
class Engine:
    """Which engine answers: its product (Docker or Podman), version and API version."""

    product: str
    version: str
    api_version: str

    @property
    def is_podman(self) -> bool:
        return self.product == PODMAN

    def __str__(self) -> str:
        return f"{self.product} {self.version} (API {self.api_version})"


DOCKER = "Docker"
PODMAN = "Podman"


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """The daemon's /info as the janitor uses it.

    `id` is what tells one daemon from another, stable across calls and restarts: Docker's
    `ID`; for Podman, whose compat `ID` is new random on every call, its host name and
    storage graph root (`podman:<name>:<graph root>`).
    """

    id: str
    name: str
    now: datetime
    containers: int
    server_version: str
    engine: Engine
    # Where the daemon keeps its data, on its own filesystem (empty when it does not say).
    docker_root: str = ""


def engine_of(ping_headers: Mapping[str, str]) -> Engine:
    """The engine behind a /_ping answer: `Server: Docker/26.1.5 (linux)`, or Podman's
    `Server: Libpod/4.3.1 (linux)` with its own `Libpod-Api-Version`."""
    server = ping_headers.get("Server", "")
    product, _, rest = server.partition("/")
    version = rest.split(" ", 1)[0]
    is_podman = product.lower() == "libpod" or "Libpod-Api-Version" in ping_headers
    return Engine(
        product=PODMAN if is_podman else DOCKER,
        version=ping_headers.get("Libpod-Api-Version", version) if is_podman else version,
        api_version=ping_headers.get("Api-Version", ""),
    )


def daemon_identity(raw_info: dict[str, Any], engine: Engine) -> str:
    if engine.is_podman:
        return f"podman:{raw_info.get('Name', '')}:{raw_info.get('DockerRootDir', '')}"
    return str(raw_info.get("ID", ""))


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
        self._api: PinnedAPIClient | None = None
        # The hot calls' own client, for a unix socket (see dockerhost.lean).
        self._lean: LeanUnixClient | None = None
        self._lock = threading.Lock()
        # How many API calls each operation made: the idle-cost benchmark reads it.
        self.calls: Counter[str] = Counter()

    def __enter__(self) -> DockerHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lean is not None:
            self._lean.close()
            self._lean = None
        if self._api is not None:
            self._api.close()
            self._api = None

    def _client(self) -> PinnedAPIClient:
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
                    self._lean = LeanUnixClient(socket_path, api.api_version, self._timeout)
                self._api = api
            return self._api

    def _inspect_raw(self, container_id: str) -> dict[str, Any]:
        api = self._client()
        call = api.inspect_container if self._lean is None else self._lean.inspect_container
        raw: dict[str, Any] = self._guard("inspect", lambda: call(container_id))
        return raw

    def _guard(self, operation: str, call: Callable[[], T]) -> T:
        """Run one API call; whatever the SDK, requests or the socket raise becomes ours."""
        self.calls[operation] += 1
        try:
            return call()
        # requests' errors are OSErrors too: this also takes a socket that vanished mid-call,
        # which urllib3 lets through bare.
        except (docker.errors.DockerException, OSError) as exc:
            raise fault(f"{self.name} ({self.config.url})", operation, exc) from exc

    def engine(self) -> Engine:
        """Which engine this is, from the /_ping answer the client was made with."""
        return engine_of(self._client().engine_headers)

    def info(self) -> DaemonInfo:
        api = self._client()
        raw: dict[str, Any] = self._guard("info", api.info)
        now = parse_instant(raw.get("SystemTime"))
        if now is None:
            raise DaemonError(f"{self.name} ({self.config.url}) reported no SystemTime in /info")
        engine = self.engine()
        return DaemonInfo(
            id=daemon_identity(raw, engine),
            name=str(raw.get("Name", "")),
            now=now,
            containers=int(raw.get("Containers", 0)),
            server_version=str(raw.get("ServerVersion", "")),
            engine=engine,
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
        raw = self._inspect_raw(container_id)
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
        raw = self._inspect_raw(container_id)
        return _namespace_references(raw.get("HostConfig") or {})

    def kill(self, container: Container, stop_timeout: timedelta) -> Detail | None:
        """Stop a ghost for good: SIGTERM, SIGKILL after stop_timeout, no resurrection.

        Returns the caveat of a kill that was done, if any: an engine without the update
        route (Podman < 5.1) keeps the restart policy, and the container is stopped anyway.
        """
        api = self._client()
        caveat = None
        if container.restart_policy in RESTART_POLICIES_THAT_RESURRECT:
            # A SIGKILLed container with these policies comes back when the daemon restarts.
            try:
                self._guard(
                    "update",
                    # The stubs omit "no", the value that turns restarting off.
                    lambda: api.update_container(
                        container.id,
                        restart_policy={"Name": "no"},  # type: ignore[arg-type]
                    ),
                )
            except UnsupportedByEngineError:
                # A ghost left running costs more than one Podman may restart at boot (only
                # podman-restart.service does that; a stop through the API is not undone).
                caveat = Detail.RESTART_POLICY_KEPT
        seconds = math.ceil(stop_timeout.total_seconds())
        self._guard("stop", lambda: api.stop(container.id, timeout=seconds))
        return caveat

    def remove(self, container_id: str, *, volumes: bool) -> None:
        """Remove a stopped container; never forced, so a running one is refused (409)."""
        api = self._client()
        if self._lean is not None:
            lean = self._lean
            self._guard("remove", lambda: lean.remove_container(container_id, volumes=volumes))
        else:
            self._guard(
                "remove", lambda: api.remove_container(container_id, v=volumes, force=False)
            )

    def starts_between(self, since: datetime, until: datetime) -> list[datetime]:
        """When containers were started in [since, until], from the daemon's event buffer.

        The daemon replays only its last events (256 in 20.10), so under heavy churn the
        answer covers a shorter span than asked: callers measure rates over what came back.
        """
        api = self._client()
        until_second = int(until.timestamp())
        params = {
            "since": str(int(since.timestamp())),
            "filters": json.dumps({"type": ["container"], "event": ["start"]}),
        }
        if self.engine().is_podman:
            # Podman 4.3 closes a window whose `until` has passed before it reads its event
            # log, and answers nothing; `stream=false` reads the log up to now instead.
            params["stream"] = "false"
        else:
            params["until"] = str(until_second)
        # As the daemon's own `until`: whole seconds, that second included.
        window_end = datetime.fromtimestamp(until_second + 1, tz=UTC)

        def fetch() -> list[datetime]:
            # The SDK's events() streams with no timeout at all, so a frozen daemon held its
            # caller for good; a window that has ended is one finite answer, read whole
            # under the client's timeout.
            response = api.get(
                f"{api.base_url}/v{api.api_version}/events", params=params, timeout=self._timeout
            )
            response.raise_for_status()
            # Docker and Podman write one JSON object a line. Podman 4.3 ignores the `event`
            # filter and sends every event of the window: filter here as well.
            events = [json.loads(line) for line in response.text.splitlines() if line.strip()]
            starts = [
                datetime.fromtimestamp(e["timeNano"] / 1e9, tz=UTC)
                for e in events
                if is_container_start(e)
            ]
            return [at for at in starts if at < window_end]

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


def is_container_start(event: dict[str, Any]) -> bool:
    return event.get("Type") == "container" and event.get("Action") == "start"


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
