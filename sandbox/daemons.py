"""Container engines for the tests, the benchmarks and the demo: private `dockerd` processes
(sandbox.podman adds Podman's service), or a developer's own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import docker

from janitor.children import Child, at_exit, forget
from janitor.dockerhost import DockerHost
from janitor.model import HostConfig
from sandbox.engines import EngineBinaries, binaries, default_engine, selected_engine
from sandbox.image import IMAGE
from sandbox.managed import Borrowed, Lifecycle, Managed
from sandbox.procfs import kill_trees_naming

START_TIMEOUT = 60.0
START_TIMEOUT_DELTA = timedelta(seconds=START_TIMEOUT)
# dockerd stops running containers before it exits, 10 s each (in parallel) for a PID 1
# that ignores SIGTERM; give that a chance before forcing.
STOP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60
RESET_TIMEOUT = 60.0
# Podman 4.3 may answer a forced removal of a restart-looping container with a 500 "cannot
# remove container <id> as it could not be stopped: sending SIGKILL to container <id>: ...
# container state improper": its process exited between Podman's look at its state and the
# kill. A removal a little later goes through (27 such answers in 30 resets of a paused and
# three restart-looping containers in the Debian 13 chroot, all gone within the retries).
IMPROPER_STATE_RETRIES = 20
IMPROPER_STATE_PAUSE = 0.25


class Engine(Lifecycle, Protocol):
    """What tests may ask of a Docker host, private or not."""

    name: str

    @property
    def url(self) -> str: ...

    @property
    def daemon_id(self) -> str: ...

    def client(self) -> docker.DockerClient: ...

    def api(self) -> docker.APIClient: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def reset(self) -> None: ...


class PrivateEngine(Managed):
    """What every engine of our own shares: a temp dir holding its socket, state and log; one
    server process (`_server`) that can be frozen; one client; an empty reset; a full cleanup.

    Subclasses start and stop the server their own way (`start`, `stop`)."""

    def __init__(self, name: str) -> None:
        if os.geteuid() != 0:
            raise RuntimeError(
                "a private engine needs root; without it, point JANITOR_TEST_DOCKER_URLS at two "
                "daemons of your own (see tests/conftest.py)"
            )
        self.name = name
        # Short on purpose: unix socket paths stop at 108 bytes, and containerd keeps its own
        # sockets under the exec root.
        self.dir = Path(tempfile.mkdtemp(prefix="jt-", dir="/tmp"))
        self._socket = self.dir / "docker.sock"
        self._server: Child | None = None
        self._client: docker.DockerClient | None = None
        self._daemon_id: str | None = None
        self._frozen = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.url!r})"

    @property
    def url(self) -> str:
        return f"unix://{self._socket}"

    @property
    def daemon_id(self) -> str:
        """The identity the janitor records for this engine (janitor.dockerhost.DaemonInfo)."""
        if self._daemon_id is None:
            raise RuntimeError(f"{self!r} has not been started")
        return self._daemon_id

    @property
    def is_running(self) -> bool:
        return self._server is not None and self._server.is_running

    def client(self) -> docker.DockerClient:
        """The engine's one client, kept across restarts and closed by `cleanup`."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=CLIENT_TIMEOUT)
        return self._client

    def api(self) -> docker.APIClient:
        return self.client().api

    def _serve(self, child: Child) -> None:
        """Start the server process and wait until its socket answers; stop it if it fails."""
        self._server = child
        at_exit(self, self.cleanup)
        child.start()
        try:
            child.wait_ready(lambda: _pings(self._socket), START_TIMEOUT, "answering /_ping")
            with DockerHost(HostConfig(self.name, self.url), timeout=START_TIMEOUT_DELTA) as host:
                self._daemon_id = host.info().id
        except BaseException:
            self.stop()
            raise

    def _stop_server(self) -> None:
        if self._server is None:
            return
        # A stopped process holds a SIGTERM until it is continued.
        self.thaw()
        self._server.stop(STOP_TIMEOUT)
        self._server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server alone: its socket accepts connections but nothing answers."""
        if self._server is None or not self.is_running:
            raise RuntimeError(f"{self!r} is not running")
        self._server.send_signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen and self._server is not None:
            self._server.send_signal(signal.SIGCONT)
        self._frozen = False

    def reset(self) -> None:
        """Running, answering and empty again, whatever the last test did to it."""
        self.thaw()
        if not self.is_running:
            self.start()
        _remove_containers(self.api(), {})
        self.api().prune_volumes()

    def cleanup(self) -> None:
        """Stop the engine and remove every trace of it: processes, mounts, files."""
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        _unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        forget(self)


class PrivateDaemon(PrivateEngine):
    """A dockerd of our own: data root, exec root, pidfile, socket and log under one temp dir.

    A restart keeps the data root: containers persist, running ones are stopped. Without
    live-restore dockerd stops what runs before it exits, which takes 10 s for a PID 1 that
    ignores SIGTERM (SLEEP_FOREVER); TERM_AWARE containers go at once.
    """

    def __init__(
        self,
        name: str,
        *,
        extra_args: Sequence[str] = (),
        netns: str | None = None,
        binaries: EngineBinaries | None = None,
    ) -> None:
        """`extra_args` go to dockerd as they are, e.g. a TLS-verified tcp listener;
        `binaries` default to the selected engine's dockerd (sandbox.engines).

        With `netns` (a namespace under /run/netns that the caller made) dockerd runs inside
        that network namespace with its default bridge, so containers get real interfaces
        there and never on the machine's own network; without it there is no bridge at all.
        """
        self._binaries = binaries or docker_binaries()
        super().__init__(name)
        self._extra_args = tuple(extra_args)
        self._netns = netns
        self.log_path = self.dir / "dockerd.log"
        self._exec_root = self.dir / "x"
        self._pidfile = self.dir / "dockerd.pid"

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError(f"dockerd {self.name} is already running")
        # One that died under a test left containerd, shims and pidfiles behind.
        self.stop()
        # Our own config file keeps /etc/docker/daemon.json out, and our own key matters more:
        # the daemon ID is the key's fingerprint, so a shared /etc/docker/key.json would make
        # two hosts look like one. 20.10 takes the key path only from the config file.
        config = self.dir / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(self.dir / "key.json")}))
        inside = [] if self._netns is None else ["nsenter", f"--net=/run/netns/{self._netns}", "--"]
        bridge = ["--bridge=none"] if self._netns is None else []
        command = [
            *inside,
            self._binaries.server,
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self._exec_root}",
            f"--pidfile={self._pidfile}",
            f"--host={self.url}",
            f"--config-file={config}",
            *bridge,
            "--iptables=false",
            "--ip6tables=false",
            *self._extra_args,
        ]
        env = self._binaries.env()
        self._serve(Child(f"dockerd {self.name}", command, log_path=self.log_path, env=env))

    def stop(self) -> None:
        """Shut dockerd down as a service manager would; force it after STOP_TIMEOUT."""
        if self._server is None:
            return
        self._stop_server()
        _kill_leftovers(self._exec_root)
        # A containerd killed along with dockerd stays a zombie until init reaps it, and a
        # new dockerd that finds its pid "alive" waits for it instead of starting its own.
        for pidfile in (self._pidfile, self._exec_root / "containerd" / "containerd.pid"):
            pidfile.unlink(missing_ok=True)


class ExternalDaemon(Borrowed):
    """A daemon the developer runs: tests plant and remove their own containers, nothing more."""

    private = "daemon"
    how = "unset JANITOR_TEST_DOCKER_URLS and run as root"

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self._url = url
        self._client: docker.DockerClient | None = None
        self._daemon_id = str(self.client().info()["ID"])

    def __repr__(self) -> str:
        return f"ExternalDaemon({self.name!r}, {self.url!r})"

    @property
    def url(self) -> str:
        return self._url

    @property
    def daemon_id(self) -> str:
        return self._daemon_id

    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = docker.DockerClient(base_url=self._url, timeout=CLIENT_TIMEOUT)
        return self._client

    def api(self) -> docker.APIClient:
        return self.client().api

    def freeze(self) -> None:
        raise self._needs_private("freeze")

    def thaw(self) -> None:
        raise self._needs_private("thaw")

    def reset(self) -> None:
        # Never touch what the tests did not create: only containers of the test image go.
        _remove_containers(self.api(), {"ancestor": IMAGE})

    def cleanup(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def docker_binaries() -> EngineBinaries:
    """The selected engine's dockerd; the machine's own when the selected engine is Podman
    (the TLS tests' daemon, say)."""
    engine = selected_engine()
    chosen = binaries(engine)
    return binaries(default_engine()) if chosen.is_podman else chosen


def _pings(sock_path: Path) -> bool:
    # A raw request: a docker client would first ask /version and fail less legibly.
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            sock.connect(str(sock_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(4096).split(b"\r\n", 1)[0].split()
    except OSError:
        return False
    return status_line[1:2] == [b"200"]


def _remove_containers(api: docker.APIClient, filters: Mapping[str, str]) -> None:
    deadline = time.monotonic() + RESET_TIMEOUT
    improper: Counter[str] = Counter()
    while leftovers := api.containers(all=True, filters=dict(filters)):
        if time.monotonic() > deadline:
            ids = [container["Id"][:12] for container in leftovers]
            raise RuntimeError(f"containers still there after {RESET_TIMEOUT:.0f} s: {ids}")
        pause = 0.0
        for container in leftovers:
            container_id = container["Id"]
            try:
                api.remove_container(container_id, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                if error.status_code == 409:
                    # An auto_remove or another removal is already under way; look again.
                    pause = max(pause, 0.1)
                elif _in_improper_state(error) and improper[container_id] < IMPROPER_STATE_RETRIES:
                    improper[container_id] += 1
                    pause = max(pause, IMPROPER_STATE_PAUSE)
                else:
                    raise
        time.sleep(pause)


def _in_improper_state(error: docker.errors.APIError) -> bool:
    """Podman's refusal of an action in the container's current state (ErrCtrStateInvalid)."""
    return error.status_code == 500 and "container state improper" in str(error.explanation or "")


def _kill_leftovers(exec_root: Path) -> None:
    """SIGKILL containerd, its shims and their containers if a daemon left them behind.

    dockerd starts containerd in a session of its own and shims outlive a killed containerd,
    so neither dies with dockerd's process group. containerd holds a lock on its database: a
    restart must wait for the old one to go, which kill_trees_naming does.
    """
    for argv in kill_trees_naming(exec_root):
        # A shim removes its socket when it exits, not when it is killed.
        for shim_socket in _shim_socket(argv):
            shim_socket.unlink(missing_ok=True)


def _shim_socket(argv: list[str]) -> list[Path]:
    """The socket of a containerd shim, if `argv` is one: /run/containerd/s/<sha256 of
    containerd's address/namespace/id>, outside the exec root whatever it is."""
    if not argv[0].endswith("containerd-shim-runc-v2"):
        return []
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    path = f"{flags['-address']}/{flags['-namespace']}/{flags['-id']}"
    return [Path("/run/containerd/s") / hashlib.sha256(path.encode()).hexdigest()]


def _unmount_under(root: Path) -> None:
    # dockerd leaves overlay, nsfs and bind mounts under its roots when it dies unclean;
    # children come after parents in /proc/self/mounts, so undo them in reverse.
    prefix = f"{root}/"
    targets = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in reversed(targets):
        if target == str(root) or target.startswith(prefix):
            # A lazy unmount of a parent may already have taken this one along.
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)
