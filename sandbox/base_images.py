"""Stand-ins for the base images the Dockerfile and docker-compose.yml name, made without a
registry: one Debian 12 minbase (debootstrap, from the archive the machine's apt sources name)
with Python 3.11, pip and Redis, imported twice.

They keep what the project's files rely on from the official images: `python3.11`, `python`
and `pip` in /usr/local/bin and pip allowed to install as root (python:3.11-slim-bookworm);
`redis-server` with protected mode off, as the official image builds it, started in /data,
and `redis-cli` (redis:7-alpine). Debian 12's Python is 3.11.2, older than any current slim
image, which is why the wheelhouse fetches what 3.11 releases below 3.11.3 need.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker

from sandbox.prerequisites import require_binary

PYTHON_IMAGE = "python:3.11-slim-bookworm"
REDIS_IMAGE = "redis:7-alpine"
ARCHIVE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "debian-archive.sh"
PACKAGES = ("python3", "python3-pip", "redis-server")
REDIS_WRAPPER = """#!/bin/sh
# The official image builds Redis with protected mode off; Debian's keeps it on, and would
# refuse every other container of the project.
exec /usr/bin/redis-server "$@" --protected-mode no
"""


def make_rootfs(target: Path) -> Path:
    """Debootstrap the stand-ins' file system into `target` and pack it; return the tarball."""
    debootstrap = require_binary("debootstrap", package="debootstrap")
    archive = subprocess.run(
        ["bash", str(ARCHIVE_SCRIPT)], check=True, capture_output=True, text=True
    ).stdout.strip()
    root = target / "root"
    made = subprocess.run(
        [debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", "bookworm",
         str(root), archive],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(
            f"debootstrap bookworm failed:\n{made.stdout[-2000:]}{made.stderr[-2000:]}"
        )
    (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink()
    local = root / "usr/local/bin"
    for name in ("python3.11", "python3", "python"):
        (local / name).symlink_to("/usr/bin/python3.11")
    (local / "pip").symlink_to("/usr/bin/pip3")
    (local / "redis-server").write_text(REDIS_WRAPPER)
    (local / "redis-server").chmod(0o755)
    (root / "data").mkdir()
    tarball = target / "rootfs.tar"
    subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
    shutil.rmtree(root)  # 300 MB that pytest would keep for its last three runs
    return tarball


def import_stand_ins(api: docker.APIClient, tarball: Path) -> None:
    """Import both stand-ins into the daemon behind `api`."""
    for image, changes in (
        (PYTHON_IMAGE, ['CMD ["python3"]']),
        (REDIS_IMAGE, ["WORKDIR /data", 'CMD ["redis-server"]']),
    ):
        repository, tag = image.split(":")
        api.import_image(src=str(tarball), repository=repository, tag=tag, changes=changes)
        api.inspect_image(image)  # type: ignore[no-untyped-call]  # ImageNotFound if it failed
