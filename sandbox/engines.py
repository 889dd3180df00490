"""Which container engine the sandbox runs, and where its binaries are.

`JANITOR_TEST_ENGINE` picks one of ENGINES (default: Debian 12's own dockerd). The engines
Debian 12 does not ship come from scripts/fetch-engines.sh, which unpacks Debian 13's packages
under ENGINES_CACHE without installing them; a missing one fails with the command to run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sandbox.prerequisites import MissingPackagesError, require_binary

ENGINE_VARIABLE = "JANITOR_TEST_ENGINE"
CACHE_VARIABLE = "ENGINES_CACHE"
DEFAULT_CACHE = Path("/var/cache/container-janitor-engines")
DOCKER_20 = "docker-20.10"
DOCKER_26 = "docker-26"
PODMAN_4 = "podman-4.3"
PODMAN_5 = "podman-5"
ENGINES = (DOCKER_20, DOCKER_26, PODMAN_4, PODMAN_5)


@dataclass(frozen=True, slots=True)
class EngineBinaries:
    """One engine's binaries: the server itself and what must come first on its PATH."""

    engine: str
    server: str
    path_prefix: tuple[str, ...] = ()
    # Podman's helpers (netavark); empty for Debian 12's podman, which knows its own.
    helper_dirs: tuple[str, ...] = ()

    @property
    def is_podman(self) -> bool:
        return self.engine.startswith("podman")

    def env(self) -> dict[str, str]:
        """The environment the server runs with: ours, its own binaries first on PATH."""
        path = os.pathsep.join([*self.path_prefix, os.environ.get("PATH", "")])
        return os.environ | {"PATH": path}


def clears_restart_policies(engine: str) -> bool:
    """Whether the engine has /containers/{id}/update, which Podman gained in 5.1."""
    return engine != PODMAN_4


def selected_engine() -> str:
    engine = os.environ.get(ENGINE_VARIABLE, DOCKER_20)
    if engine not in ENGINES:
        raise RuntimeError(f"{ENGINE_VARIABLE}={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def binaries(engine: str) -> EngineBinaries:
    """Where `engine` lives here; MissingPackagesError saying how to get it when it does not."""
    if engine == DOCKER_20:
        return EngineBinaries(engine, require_binary("dockerd", package="docker.io"))
    if engine == PODMAN_4:
        return EngineBinaries(engine, require_binary("podman", package="podman"))
    root = _fetched(engine)
    if engine == DOCKER_26:
        # Debian 13's dockerd and containerd with Debian 12's runc (installed with docker.io).
        require_binary("runc", package="runc")
        return EngineBinaries(
            engine, str(root / "usr/sbin/dockerd"), path_prefix=(str(root / "usr/bin"),)
        )
    return EngineBinaries(
        engine,
        str(root / "usr/bin/podman"),
        helper_dirs=(str(root / "usr/lib/podman"), str(root / "usr/libexec/podman")),
    )


def _fetched(engine: str) -> Path:
    root = Path(os.environ.get(CACHE_VARIABLE, DEFAULT_CACHE)) / engine
    if not root.is_dir():
        raise MissingPackagesError(
            f"{engine} is not unpacked under {root.parent}: run scripts/fetch-engines.sh"
        )
    return root
