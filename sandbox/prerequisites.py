"""What the sandbox needs installed (dockerd, redis-server, a static busybox), checked, never
installed: scripts/bootstrap.sh installs it, and every message here says so."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

# The busybox check below is the image module's own; reusing it keeps the two from disagreeing
# about which binary the test image can be built from.
from sandbox.image import BUSYBOX, _has_interpreter

# (binary on PATH, Debian package that provides it)
BINARIES = (("dockerd", "docker.io"), ("redis-server", "redis-server"))
BUSYBOX_PACKAGE = "busybox-static"


class MissingPackagesError(RuntimeError):
    """A package the sandbox needs is not installed; says how to install it."""


def how_to_install(packages: list[str]) -> str:
    return f"run scripts/bootstrap.sh (or apt-get install {' '.join(packages)})"


def require_binary(binary: str, *, package: str) -> str:
    """The path of `binary`; MissingPackagesError naming its package when it is not on PATH."""
    path = shutil.which(binary)
    if path is None:
        raise MissingPackagesError(f"{binary} not found on PATH: {how_to_install([package])}")
    return path


def is_static_busybox(path: Path = BUSYBOX) -> bool:
    """Whether `path` is a busybox the test image can hold: an ELF with no dynamic loader."""
    try:
        return not _has_interpreter(path.read_bytes())
    except (OSError, RuntimeError):
        return False


def missing_packages(
    which: Callable[[str], str | None] = shutil.which,
    busybox_ok: Callable[[], bool] = is_static_busybox,
) -> list[str]:
    """The Debian packages to install before a sandbox can run here, in install order."""
    missing = [package for binary, package in BINARIES if which(binary) is None]
    if not busybox_ok():
        missing.append(BUSYBOX_PACKAGE)
    return missing


def check_sandbox_packages() -> None:
    """MissingPackagesError naming every missing package and how to install them."""
    missing = missing_packages()
    if missing:
        raise MissingPackagesError(
            f"missing Debian packages {', '.join(missing)}: {how_to_install(missing)}"
        )
