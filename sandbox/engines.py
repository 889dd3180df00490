"""Which container engine the sandbox runs, and where its binaries are.

`JANITOR_TEST_ENGINE` picks one of ENGINES; the default is the machine's own dockerd (Docker
20.10 on Debian 12, 26 on Debian 13). Each Debian release ships two engines of the matrix and
scripts/fetch-engines.sh unpacks the other release's two under ENGINES_CACHE without
installing them; a missing one fails with the command to run.
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
# What each Debian release the matrix runs on ships itself: its Docker first.
SHIPPED = {"bookworm": (DOCKER_20, PODMAN_4), "trixie": (DOCKER_26, PODMAN_5)}
OS_RELEASE = Path("/etc/os-release")
PODMAN_HELPER_DIRS = ("usr/lib/podman", "usr/libexec/podman")
CLI_PLUGINS = Path("usr/libexec/docker/cli-plugins")


@dataclass(frozen=True, slots=True)
class EngineBinaries:
    """One engine's binaries: the server itself and what must come first on its PATH."""

    engine: str
    server: str
    path_prefix: tuple[str, ...] = ()
    # A fetched Podman's helpers (netavark); empty for the machine's own, which knows its own.
    helper_dirs: tuple[str, ...] = ()

    @property
    def is_podman(self) -> bool:
        return is_podman(self.engine)

    def env(self) -> dict[str, str]:
        """The environment the server runs with: ours, its own binaries first on PATH."""
        path = os.pathsep.join([*self.path_prefix, os.environ.get("PATH", "")])
        return os.environ | {"PATH": path}


def clears_restart_policies(engine: str) -> bool:
    """Whether the engine has /containers/{id}/update, which Podman gained in 5.1."""
    return engine != PODMAN_4


def is_podman(engine: str) -> bool:
    return engine.startswith("podman")


def machine_release() -> str:
    """The machine's release codename ("" when /etc/os-release names none)."""
    fields = dict(line.split("=", 1) for line in OS_RELEASE.read_text().splitlines() if "=" in line)
    return fields.get("VERSION_CODENAME", "").strip('"')


def native_engines() -> tuple[str, str]:
    """The machine's own Docker and Podman. On a release the matrix does not know, they stand
    in for Debian 12's, as they did before the matrix knew releases (fetch-engines.sh says it
    cannot fetch for that release)."""
    return SHIPPED.get(machine_release(), SHIPPED["bookworm"])


def default_engine() -> str:
    return native_engines()[0]


def other_engines() -> tuple[str, ...]:
    """The engines CI runs the conformance part against after the whole suite."""
    return tuple(engine for engine in ENGINES if engine != default_engine())


def selected_engine() -> str:
    engine = os.environ.get(ENGINE_VARIABLE) or default_engine()
    if engine not in ENGINES:
        raise RuntimeError(f"{ENGINE_VARIABLE}={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def binaries(engine: str) -> EngineBinaries:
    """Where `engine` lives here; MissingPackagesError saying how to get it when it does not."""
    if engine in native_engines():
        if is_podman(engine):
            return EngineBinaries(engine, require_binary("podman", package="podman"))
        return EngineBinaries(engine, require_binary("dockerd", package="docker.io"))
    root = _fetched(engine)
    if not is_podman(engine):
        # The other release's dockerd and containerd with this one's runc (from docker.io).
        require_binary("runc", package="runc")
        return EngineBinaries(
            engine, str(root / "usr/sbin/dockerd"), path_prefix=(str(root / "usr/bin"),)
        )
    helpers = [root / folder for folder in PODMAN_HELPER_DIRS]
    if not (root / "usr/lib/podman/netavark").is_file():
        # Debian 12's podman package has no network helper of its own: on Debian 13 the
        # machine's netavark serves it, after its own helpers.
        helpers += [Path("/") / folder for folder in PODMAN_HELPER_DIRS]
    return EngineBinaries(
        engine,
        str(root / "usr/bin/podman"),
        helper_dirs=tuple(str(folder) for folder in helpers if folder.is_dir()),
    )


def compose_plugins() -> Path:
    """The folder of the Compose v2 and buildx CLI plugins: the machine's own where both are
    installed (by hand, or Debian 13's docker-compose and docker-buildx), else Debian 13's
    that fetch-engines.sh unpacked on Debian 12, which ships neither."""
    system = (Path("/usr/local/lib/docker/cli-plugins"), Path("/") / CLI_PLUGINS)
    for folder in (*system, _cache() / "compose" / CLI_PLUGINS):
        if (folder / "docker-compose").is_file() and (folder / "docker-buildx").is_file():
            return folder
    raise MissingPackagesError(
        "Compose v2 and buildx are missing: run scripts/bootstrap.sh and scripts/fetch-engines.sh"
    )


def _cache() -> Path:
    return Path(os.environ.get(CACHE_VARIABLE, DEFAULT_CACHE))


def _fetched(engine: str) -> Path:
    root = _cache() / engine
    if not root.is_dir():
        raise MissingPackagesError(
            f"{engine} is not unpacked under {root.parent}: run scripts/fetch-engines.sh"
        )
    return root


if __name__ == "__main__":
    # For .ci/run: the engines after the whole suite, one per line.
    print("\n".join(other_engines()))
