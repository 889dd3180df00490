"""The only package that talks to Docker (or Podman's Docker-compatible API).

`host` is the daemon as the janitor sees it; `transport` is the SDK's client as the janitor
needs it and what each of its failures means; `lean` makes the sweep's hot calls (inspect,
remove) straight over a unix socket. Nothing outside this package imports the SDK.
"""

from janitor.dockerhost.host import (
    RESTART_POLICIES_THAT_RESURRECT,
    DaemonInfo,
    DockerHost,
    Engine,
    own_container_ids,
    parse_instant,
)

__all__ = [
    "RESTART_POLICIES_THAT_RESURRECT",
    "DaemonInfo",
    "DockerHost",
    "Engine",
    "own_container_ids",
    "parse_instant",
]
