"""Network namespaces of our own, for daemons whose containers need real interfaces (bridges,
veths) that must never appear on the machine's own network."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def network_namespace(prefix: str = "jb") -> Iterator[str]:
    """A network namespace of our own, with only its loopback up; deleted at exit."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inside(name, "ip", "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def inside(netns: str, *argv: str) -> str:
    """What `argv` prints when run inside the namespace; CalledProcessError if it fails."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True
    )
    return done.stdout
