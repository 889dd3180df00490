"""A daemon's images, volumes and networks as the janitor sees them: list, inspect, remove
(never forced), what every container refers to, and the events that date arrival and use.

Like `host`, it does exactly what it is told and decides nothing.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import docker.errors

from janitor.dockerhost.host import DockerHost, parse_instant
from janitor.dockerhost.transport import fault
from janitor.errors import ContainerConflictError, ContainerGoneError
from janitor.unused import References, Resource, ResourceKind

T = TypeVar("T")

# The events that say an item arrived or was used: pull, import, tag, load for images; a
# container created from an image or committed to one; a volume created or mounted; a network
# created or joined.
_ARRIVAL_OR_USE = ("pull", "import", "tag", "load", "create", "commit", "mount", "connect")
_NO_TAG = "<none>:<none>"
# Network modes that name no user network.
_NOT_A_NETWORK = frozenset({"", "default", "bridge", "host", "none"})


class ResourceHost:
    """Images, volumes and networks of the daemon behind one DockerHost, on its client."""

    def __init__(self, docker_host: DockerHost) -> None:
        self.host = docker_host
        self.name = docker_host.name

    # One adapter in two modules: the client, its guard and its timeout are DockerHost's.
    def _api(self) -> docker.APIClient:
        return self.host._client()

    def _host_call(self, operation: str, call: Callable[[], T]) -> T:
        return self.host._guard(operation, call)

    def _item_call(self, operation: str, call: Callable[[], T]) -> T:
        """One call about one item: 404 is gone, 409 (in use) and 403 (a network with
        endpoints, a predefined network) are the daemon refusing; the rest as for containers."""
        self.host.calls[operation] += 1
        try:
            return call()
        except docker.errors.APIError as exc:
            status = exc.response.status_code if exc.response is not None else None
            said = str(exc.explanation or exc)
            if status == 404 and "page not found" not in said.lower():
                raise ContainerGoneError(f"{operation}: {said}") from exc
            if status in (403, 409):
                raise ContainerConflictError(f"{operation} refused: {said}") from exc
            raise fault(f"{self.name} ({self.host.config.url})", operation, exc) from exc
        except (docker.errors.DockerException, OSError) as exc:
            raise fault(f"{self.name} ({self.host.config.url})", operation, exc) from exc

    def references(self, filters: Mapping[str, list[str]] | None = None) -> list[References]:
        """What every container in every state refers to, whatever the selector (or only
        those the daemon's filters match: ancestor, volume, network)."""
        api = self._api()
        raw: list[dict[str, Any]] = self._host_call(
            "list", lambda: api.containers(all=True, filters=dict(filters or {}))
        )
        return [_references(item) for item in raw]

    def references_to(self, resource: Resource) -> list[References]:
        """The containers that refer to one item now: the re-check right before a removal."""
        match resource.kind:
            case ResourceKind.IMAGE:
                return self.references({"ancestor": [resource.id]})
            case ResourceKind.VOLUME:
                return self.references({"volume": [resource.id]})
            case ResourceKind.NETWORK:
                return self.references({"network": [resource.id, *resource.aliases]})

    def list(self, kind: ResourceKind) -> list[Resource]:
        api = self._api()
        match kind:
            case ResourceKind.IMAGE:
                images: list[dict[str, Any]] = self._host_call("list", api.images)
                return [_image(item) for item in images]
            case ResourceKind.VOLUME:
                answer: dict[str, Any] = self._host_call("list", api.volumes)
                return [_volume(item) for item in answer.get("Volumes") or []]
            case ResourceKind.NETWORK:
                networks: list[dict[str, Any]] = self._host_call("list", api.networks)
                return [_network(item) for item in networks]

    def inspect(self, kind: ResourceKind, item_id: str) -> Resource:
        api = self._api()
        match kind:
            case ResourceKind.IMAGE:
                # The stubs leave inspect_image untyped.
                image = self._item_call("inspect", lambda: api.inspect_image(item_id))  # type: ignore[no-untyped-call]
                return _image(image)
            case ResourceKind.VOLUME:
                return _volume(self._item_call("inspect", lambda: api.inspect_volume(item_id)))
            case ResourceKind.NETWORK:
                return _network(self._item_call("inspect", lambda: api.inspect_network(item_id)))

    def remove(self, resource: Resource) -> None:
        """Remove one item, never forced: the daemon refuses one in use (409)."""
        api = self._api()
        match resource.kind:
            case ResourceKind.IMAGE:
                # An image with several tags cannot be removed by id without force: untag all
                # but one, each only while it still names this image (a pull may have moved
                # it to another), then remove the image by id, which no pull can move.
                for reference in resource.aliases[1:]:
                    if self._names(reference, resource.id):
                        self._item_call("remove", functools.partial(api.remove_image, reference))
                self._item_call("remove", functools.partial(api.remove_image, resource.id))
            case ResourceKind.VOLUME:
                self._item_call("remove", lambda: api.remove_volume(resource.id, force=False))
            case ResourceKind.NETWORK:
                self._item_call("remove", lambda: api.remove_network(resource.id))

    def _names(self, reference: str, image_id: str) -> bool:
        api = self._api()
        try:
            # The stubs leave inspect_image untyped.
            current = self._item_call("inspect", lambda: api.inspect_image(reference))  # type: ignore[no-untyped-call]
        except ContainerGoneError:
            return False
        return bool(current.get("Id") == image_id)

    @staticmethod
    def volume_bytes(volume: Resource) -> int:
        """What a volume holds on disk, where this process can read it; 0 where it cannot."""
        total = 0
        for root, _dirs, files in os.walk(volume.mountpoint):
            for file_name in files:
                try:
                    total += (Path(root) / file_name).lstat().st_size
                except OSError:
                    continue  # removed while walking: nothing to count
        return total

    def arrivals_and_uses(self, since: datetime, until: datetime) -> dict[str, datetime]:
        """The latest arrival or use of each item (by id and by name) in the daemon's event
        buffer, which holds only its last events (256 in 20.10): a floor, not a history."""
        api = self._api()

        def fetch() -> list[dict[str, Any]]:
            # As in DockerHost.starts_between: a finished window, read whole under the timeout.
            response = api.get(
                f"{api.base_url}/v{api.api_version}/events",
                params={
                    "since": str(int(since.timestamp())),
                    "until": str(int(until.timestamp()) + 1),
                    "filters": json.dumps(
                        {
                            "type": ["image", "volume", "network", "container"],
                            "event": list(_ARRIVAL_OR_USE),
                        }
                    ),
                },
                timeout=self.host._timeout,
            )
            response.raise_for_status()
            return [json.loads(line) for line in response.text.splitlines() if line.strip()]

        latest: dict[str, datetime] = {}
        for event in self._host_call("events", fetch):
            at = datetime.fromtimestamp(event["timeNano"] / 1e9, tz=UTC)
            actor = event.get("Actor") or {}
            attributes = actor.get("Attributes") or {}
            names = {actor.get("ID", ""), attributes.get("name", "")}
            if event.get("Type") == "container":
                # The image as the creator named it (a tag or an id); a commit's new image.
                names = {attributes.get("image", ""), attributes.get("imageID", "")}
            for name in names - {""}:
                latest[name] = max(at, latest.get(name, at))
        return latest


def _references(item: Mapping[str, Any]) -> References:
    image_id = item.get("ImageID") or None
    mounts = item.get("Mounts") or []
    volumes = frozenset(
        str(m["Name"]) for m in mounts if m.get("Type") == "volume" and m.get("Name")
    )
    networks: set[str] = set()
    for name, endpoint in ((item.get("NetworkSettings") or {}).get("Networks") or {}).items():
        networks.add(name)
        if network_id := (endpoint or {}).get("NetworkID"):
            networks.add(network_id)
    mode = str((item.get("HostConfig") or {}).get("NetworkMode") or "")
    if mode not in _NOT_A_NETWORK and not mode.startswith("container:"):
        networks.add(mode)
    return References(image_id=image_id, volumes=volumes, networks=frozenset(networks))


def _labels(value: object) -> dict[str, str]:
    return dict(value) if isinstance(value, dict) else {}


def _image(item: Mapping[str, Any]) -> Resource:
    tags = tuple(t for t in item.get("RepoTags") or [] if t != _NO_TAG)
    # The list has Labels at the top, inspect under Config; only inspect has LastTagTime.
    labels = item.get("Labels") or (item.get("Config") or {}).get("Labels")
    last_tag = (item.get("Metadata") or {}).get("LastTagTime")
    return Resource(
        kind=ResourceKind.IMAGE,
        id=str(item["Id"]),
        name=tags[0] if tags else str(item["Id"])[:19],
        labels=_labels(labels),
        arrived_at=parse_instant(last_tag),
        size=int(item.get("Size") or 0),
        aliases=tags,
    )


def _volume(item: Mapping[str, Any]) -> Resource:
    return _named(ResourceKind.VOLUME, item, id_key="Name", created_key="CreatedAt")


def _network(item: Mapping[str, Any]) -> Resource:
    return _named(ResourceKind.NETWORK, item, id_key="Id", created_key="Created")


def _named(
    kind: ResourceKind, item: Mapping[str, Any], *, id_key: str, created_key: str
) -> Resource:
    """A volume (its name is its id) or a network (known by id and by name)."""
    name = str(item["Name"])
    return Resource(
        kind=kind,
        id=str(item[id_key]),
        name=name,
        labels=_labels(item.get("Labels")),
        arrived_at=parse_instant(item.get(created_key)),
        aliases=(name,) if kind is ResourceKind.NETWORK else (),
        mountpoint=str(item.get("Mountpoint") or ""),
    )
