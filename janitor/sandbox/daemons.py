"""Docker engines for integration tests: private `dockerd` processes, or a developer's own."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import docker

from janitor.sandbox.image import IMAGE

START_TIMEOUT = 60.0
# dockerd stops running containers before it exits, 10 s each (in parallel) for a PID 1
# that ignores SIGTERM; give that a chance before forcing.
STOP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60
RESET_TIMEOUT = 60.0


class Engine(Protocol):
    """What tests may ask of a Docker host, private or not."""

    name: str

    @property
    def url(self) -> str: ...

    @property
    def daemon_id(self) -> str: ...

    def client(self) -> docker.DockerClient: ...

    def api(self) -> docker.APIClient: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def reset(self) -> None: ...

    def cleanup(self) -> None: ...


class PrivateDaemon:
    """A dockerd of our own: data root, exec root, pidfile, socket and log under one temp dir."""

    def __init__(self, name: str, *, extra_args: Sequence[str] = ()) -> None:
        """`extra_args` go to dockerd as they are, e.g. a TLS-verified tcp listener."""
        if os.geteuid() != 0:
            raise RuntimeError(
                "a private dockerd needs root; without it, point JANITOR_TEST_DOCKER_URLS at two "
                "daemons of your own (see tests/conftest.py)"
            )
        self._dockerd = _require("dockerd", package="docker.io")
        self.name = name
        self._extra_args = tuple(extra_args)
        # Short on purpose: unix socket paths stop at 108 bytes, and containerd keeps its own
        # sockets under the exec root.
        self.dir = Path(tempfile.mkdtemp(prefix="jt-", dir="/tmp"))
        self.log_path = self.dir / "dockerd.log"
        self._socket = self.dir / "docker.sock"
        self._exec_root = self.dir / "x"
        self._pidfile = self.dir / "dockerd.pid"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self._daemon_id: str | None = None
        self._frozen = False

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"PrivateDaemon({self.name!r}, {self.url!r})"

    @property
    def url(self) -> str:
        return f"unix://{self._socket}"

    @property
    def daemon_id(self) -> str:
        if self._daemon_id is None:
            raise RuntimeError(f"dockerd {self.name} has not been started")
        return self._daemon_id

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_frozen(self) -> bool:
        return self._frozen

    def client(self) -> docker.DockerClient:
        """The daemon's one client, kept across restarts and closed by `cleanup`."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.url, timeout=CLIENT_TIMEOUT)
        return self._client

    def api(self) -> docker.APIClient:
        return self.client().api

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
        command = [
            self._dockerd,
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self._exec_root}",
            f"--pidfile={self._pidfile}",
            f"--host={self.url}",
            f"--config-file={config}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            *self._extra_args,
        ]
        with self.log_path.open("ab") as log:
            # A session of its own keeps a terminal's Ctrl-C away from dockerd, so teardown
            # decides when it stops, and lets a forced stop take its whole process group.
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _live.add(self)
        try:
            self._wait_until_ready()
            self._daemon_id = str(self.client().info()["ID"])
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Shut dockerd down as a service manager would; force it after STOP_TIMEOUT."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            # A stopped process holds a SIGTERM until it is continued.
            self.thaw()
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        self._frozen = False
        _kill_leftovers(self._exec_root)
        # A containerd killed along with dockerd stays a zombie until init reaps it, and a
        # new dockerd that finds its pid "alive" waits for it instead of starting its own.
        for pidfile in (self._pidfile, self._exec_root / "containerd" / "containerd.pid"):
            pidfile.unlink(missing_ok=True)

    def restart(self) -> None:
        """Stop and start on the same data root: containers persist, running ones are stopped.

        Without live-restore dockerd stops what runs before it exits, which takes 10 s for a
        PID 1 that ignores SIGTERM (SLEEP_FOREVER); TERM_AWARE containers go at once.
        """
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP dockerd alone: its socket accepts connections but nothing answers."""
        if self._proc is None or not self.is_running:
            raise RuntimeError(f"dockerd {self.name} is not running")
        self._proc.send_signal(signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        if self._frozen and self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
        self._frozen = False

    def reset(self) -> None:
        """Running, answering and empty again, whatever the last test did to it."""
        self.thaw()
        if not self.is_running:
            self.start()
        _remove_containers(self.api(), {})
        self.api().prune_volumes()

    def cleanup(self) -> None:
        """Stop dockerd and remove every trace of it: processes, mounts, files."""
        self.stop()
        if self._client is not None:
            self._client.close()
            self._client = None
        _unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        _live.discard(self)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not _pings(self._socket):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd {self.name} exited with {self._proc.returncode}; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"dockerd {self.name} did not answer /_ping within {START_TIMEOUT:.0f} s; "
                    f"end of {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class ExternalDaemon:
    """A daemon the developer runs: tests plant and remove their own containers, nothing more."""

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

    def start(self) -> None:
        raise self._needs_private("start")

    def stop(self) -> None:
        raise self._needs_private("stop")

    def restart(self) -> None:
        raise self._needs_private("restart")

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

    def _needs_private(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"cannot {what} {self.url}: this test needs a private daemon "
            "(unset JANITOR_TEST_DOCKER_URLS and run as root)"
        )


def _require(binary: str, *, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} not found on PATH: apt-get install {package}")
    return path


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
    while leftovers := api.containers(all=True, filters=dict(filters)):
        if time.monotonic() > deadline:
            ids = [container["Id"][:12] for container in leftovers]
            raise RuntimeError(f"containers still there after {RESET_TIMEOUT:.0f} s: {ids}")
        contended = False
        for container in leftovers:
            try:
                api.remove_container(container["Id"], force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as error:
                # 409: an auto_remove or another removal is already under way; look again.
                if error.status_code != 409:
                    raise
                contended = True
        if contended:
            time.sleep(0.1)


def _kill_leftovers(exec_root: Path) -> None:
    """SIGKILL containerd, its shims and their containers if a daemon left them behind.

    dockerd starts containerd in a session of its own and shims outlive a killed containerd,
    so neither dies with dockerd's process group. They name the exec root on their command
    line; container processes do not, but descend from the shims.
    """
    marker = f"{exec_root}/".encode()
    parent_of: dict[int, int] = {}
    roots: set[int] = set()
    shim_sockets: list[Path] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        pid = int(entry.name)
        # The command name in stat may hold spaces and parentheses; fields after it do not.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z":
            continue
        parent_of[pid] = int(ppid)
        if marker in cmdline:
            roots.add(pid)
            shim_sockets.extend(_shim_socket(cmdline.decode().split("\0")))
    doomed = set(roots)
    frontier = set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        doomed |= frontier
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # containerd holds a lock on its database: a restart must wait for the old one to go.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in doomed) and time.monotonic() < deadline:
        time.sleep(0.05)
    # A shim removes its socket when it exits, not when it is killed.
    for shim_socket in shim_sockets:
        shim_socket.unlink(missing_ok=True)


def _shim_socket(argv: list[str]) -> list[Path]:
    """The socket of a containerd shim, if `argv` is one: /run/containerd/s/<sha256 of
    containerd's address/namespace/id>, outside the exec root whatever it is."""
    if not argv[0].endswith("containerd-shim-runc-v2"):
        return []
    flags = dict(zip(argv[1::2], argv[2::2], strict=False))
    path = f"{flags['-address']}/{flags['-namespace']}/{flags['-id']}"
    return [Path("/run/containerd/s") / hashlib.sha256(path.encode()).hexdigest()]


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _unmount_under(root: Path) -> None:
    # dockerd leaves overlay, nsfs and bind mounts under its roots when it dies unclean;
    # children come after parents in /proc/self/mounts, so undo them in reverse.
    prefix = f"{root}/"
    targets = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in reversed(targets):
        if target == str(root) or target.startswith(prefix):
            # A lazy unmount of a parent may already have taken this one along.
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


_live: set[PrivateDaemon] = set()
_owner_pid = os.getpid()


@atexit.register
def _cleanup_leftover_daemons() -> None:
    # Teardown did not run (an interrupted session); a forked child must not do it twice.
    if os.getpid() == _owner_pid:
        for daemon in list(_live):
            daemon.cleanup()
