"""The test image: Debian's static busybox imported as `janitor-test:latest`, no registry needed."""

from __future__ import annotations

import functools
import io
import struct
import tarfile
from pathlib import Path

import docker

IMAGE = "janitor-test:latest"
BUSYBOX = Path("/bin/busybox")
# `trap` is deliberately absent: it is a shell builtin, not a busybox applet.
APPLETS = (
    "sh", "sleep", "true", "false", "cat", "echo", "kill", "top", "env", "ls", "mkdir", "touch",
)  # fmt: skip

_PT_INTERP = 3


def ensure_test_image(api: docker.APIClient) -> str:
    """Import the test image into the daemon behind `api` unless it is there; return its id."""
    try:
        return image_id(api)
    except docker.errors.ImageNotFound:
        repository, tag = IMAGE.split(":")
        api.import_image_from_data(_rootfs_tar(), repository=repository, tag=tag)
        return image_id(api)


def image_id(api: docker.APIClient) -> str:
    # The stubs leave inspect_image untyped.
    info: dict[str, object] = api.inspect_image(IMAGE)  # type: ignore[no-untyped-call]
    return str(info["Id"])


@functools.cache
def _rootfs_tar() -> bytes:
    # Built once per session: both daemons import the same bytes.
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    binary = BUSYBOX.read_bytes()
    if _has_interpreter(binary):
        # A dynamic busybox would fail inside the image with a baffling "no such file".
        raise RuntimeError(f"{BUSYBOX} is dynamically linked: apt-get install busybox-static")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(_member("bin", tarfile.DIRTYPE, 0o755))
        tar.addfile(_member("tmp", tarfile.DIRTYPE, 0o1777))
        tar.addfile(
            _member("bin/busybox", tarfile.REGTYPE, 0o755, size=len(binary)), io.BytesIO(binary)
        )
        for applet in APPLETS:
            link = _member(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def _member(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    return info


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF asks for a dynamic loader (a PT_INTERP header)."""
    if elf[:4] != b"\x7fELF":
        raise RuntimeError(f"{BUSYBOX} is not an ELF binary: apt-get install busybox-static")
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    return any(
        struct.unpack_from("<I", elf, phoff + i * phentsize)[0] == _PT_INTERP for i in range(phnum)
    )
