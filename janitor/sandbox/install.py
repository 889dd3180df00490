"""The Debian packages a sandbox needs (dockerd, a static busybox, redis-server), on demand."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

# The busybox check below is the image module's own; reusing it keeps the two from disagreeing
# about which binary the test image can be built from.
from janitor.sandbox.image import BUSYBOX, _has_interpreter

# (binary on PATH, Debian package that provides it)
BINARIES = (("dockerd", "docker.io"), ("redis-server", "redis-server"))
BUSYBOX_PACKAGE = "busybox-static"


class InstallError(RuntimeError):
    """A package the sandbox needs is missing and cannot be installed from here."""


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


def ensure_sandbox_packages(say: Callable[[str], None]) -> list[str]:
    """Install what `missing_packages` names with apt-get (root only); the packages installed.

    Raises InstallError with the command to run when this process cannot install them.
    """
    missing = missing_packages()
    if not missing:
        return []
    command = f"apt-get install {' '.join(missing)}"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InstallError(f"missing Debian packages {', '.join(missing)}: {command}")
    say(f"installing {', '.join(missing)} with apt-get (the sandbox needs them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    )
    for step in steps:
        say(f"$ {' '.join(step)}")
        done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            raise InstallError(f"{' '.join(step)} failed with code {done.returncode}: {tail}")
    still = missing_packages()
    if still:
        raise InstallError(f"still missing after apt-get: {', '.join(still)}")
    return missing
