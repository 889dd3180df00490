"""A rootful Podman of our own behind its Docker-compatible socket: `podman system service`
with private storage (--root, --runroot, --tmpdir) and private containers.conf, storage.conf
and registries.conf, under one temp dir, as the tests' second kind of engine."""

from __future__ import annotations

import contextlib
import subprocess

import docker.errors

from janitor.children import Child
from sandbox.daemons import PrivateEngine
from sandbox.engines import EngineBinaries
from sandbox.procfs import kill_trees_naming

CLEANUP_TIMEOUT = 60.0


class PrivatePodman(PrivateEngine):
    """Podman's API service on a private store. A restart keeps the store; unlike dockerd,
    Podman has no daemon that owns containers (each has its own conmon), so running ones
    keep running across it."""

    def __init__(self, name: str, binaries: EngineBinaries) -> None:
        self._binaries = binaries
        super().__init__(name)
        self.log_path = self.dir / "podman.log"
        self._conf = self.dir / "containers.conf"

    def _podman(self) -> list[str]:
        return [
            self._binaries.server,
            f"--root={self.dir / 'root'}",
            f"--runroot={self.dir / 'run'}",
            f"--tmpdir={self.dir / 'tmp'}",
            "--storage-driver=overlay",
            "--cgroup-manager=cgroupfs",
        ]

    def _env(self) -> dict[str, str]:
        return self._binaries.env() | {
            "CONTAINERS_CONF": str(self._conf),
            # No registries: the test image is imported, never pulled.
            "CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf"),
            # Nor the machine's storage.conf, written for its own Podman, which another
            # release's may not read.
            "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf"),
            "PODMAN_IGNORE_CGROUPSV1_WARNING": "1",
        }

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError(f"podman {self.name} is already running")
        helpers = ", ".join(f'"{folder}"' for folder in self._binaries.helper_dirs)
        self._conf.write_text(
            "[containers]\n"
            # Rootful Podman raises RLIMIT_NOFILE by default, which needs CAP_SYS_RESOURCE.
            "default_ulimits = []\n"
            "[engine]\n"
            # The default (journald) needs a journal; a file keeps the events API working.
            'events_logger = "file"\n' + (f"helper_binaries_dir = [{helpers}]\n" if helpers else "")
        )
        (self.dir / "registries.conf").write_text("unqualified-search-registries = []\n")
        # The same paths as the command line's: Podman 4.3 refuses a storage.conf without
        # runroot ("runroot must be set") before it reads the flags.
        (self.dir / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\nrunroot = "{self.dir / "run"}"\n'
            f'graphroot = "{self.dir / "root"}"\n'
        )
        command = [*self._podman(), "system", "service", "--time=0", self.url]
        self._serve(Child(f"podman {self.name}", command, log_path=self.log_path, env=self._env()))

    def stop(self) -> None:
        self._stop_server()

    def reset(self) -> None:
        # A forced removal stops a running container with a 10 s grace on Podman, where
        # dockerd kills it at once: the tests' SLEEP_FOREVER ignores SIGTERM.
        self.thaw()
        if self.is_running:
            for container in self.api().containers(filters={"status": "running"}):
                with contextlib.suppress(docker.errors.APIError):
                    self.api().kill(container["Id"])
        super().reset()

    def cleanup(self) -> None:
        """Remove every container through the CLI (the service is gone by then), then what
        is left of their conmon and processes, then the store."""
        self.stop()
        if (self.dir / "root").exists():
            subprocess.run(
                [*self._podman(), "rm", "--all", "--force", "--time=0"],
                env=self._env(),
                capture_output=True,
                timeout=CLEANUP_TIMEOUT,
                check=False,
            )
        # conmon is reparented to init and outlives the service; it names our store.
        kill_trees_naming(self.dir)
        super().cleanup()
