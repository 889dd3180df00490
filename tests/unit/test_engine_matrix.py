"""The engine matrix follows the machine's Debian release: its own two engines from the system,
the other release's two unpacked, and CI's conformance runs against the three it did not run
the whole suite against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sandbox import engines

BOOKWORM = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n'
TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_CODENAME="trixie"\nID=debian\n'


@pytest.fixture
def on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """A machine whose /etc/os-release says this."""

    def release(text: str) -> None:
        os_release = tmp_path / "os-release"
        os_release.write_text(text)
        monkeypatch.setattr(engines, "OS_RELEASE", os_release)

    return release


def test_debian_12_runs_the_suite_on_docker_20_10_and_fetches_the_newer_two(
    on: Callable[[str], None],
) -> None:
    on(BOOKWORM)
    assert engines.machine_release() == "bookworm"
    assert engines.default_engine() == engines.DOCKER_20
    assert engines.other_engines() == (engines.DOCKER_26, engines.PODMAN_4, engines.PODMAN_5)


def test_debian_13_runs_the_suite_on_docker_26_and_fetches_the_older_two(
    on: Callable[[str], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on(TRIXIE)
    monkeypatch.delenv(engines.ENGINE_VARIABLE, raising=False)
    assert engines.default_engine() == engines.DOCKER_26
    assert engines.selected_engine() == engines.DOCKER_26
    assert engines.other_engines() == (engines.DOCKER_20, engines.PODMAN_4, engines.PODMAN_5)
    # Debian 12's Podman is an unpacked one here: a missing cache says what to run.
    monkeypatch.setenv(engines.CACHE_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(engines.MissingPackagesError, match=r"run scripts/fetch-engines\.sh"):
        engines.binaries(engines.PODMAN_4)
    unpacked = tmp_path / "cache" / engines.PODMAN_4
    (unpacked / "usr/lib/podman").mkdir(parents=True)
    podman = engines.binaries(engines.PODMAN_4)
    assert podman.server == str(unpacked / "usr/bin/podman")
    assert podman.is_podman
    # No netavark of its own: its helpers first, then the machine's that exist.
    machine = [f"/{folder}" for folder in engines.PODMAN_HELPER_DIRS if Path(f"/{folder}").is_dir()]
    assert podman.helper_dirs == (str(unpacked / "usr/lib/podman"), *machine)


def test_a_release_the_matrix_does_not_know_runs_its_own_engines_as_debian_12s(
    on: Callable[[str], None],
) -> None:
    on("VERSION_CODENAME=sid\nID=debian\n")
    assert engines.native_engines() == engines.SHIPPED["bookworm"]


def test_an_unpacked_docker_runs_with_its_own_containerd_first_on_its_path(
    on: Callable[[str], None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on(BOOKWORM)
    monkeypatch.setenv(engines.CACHE_VARIABLE, str(tmp_path))
    (tmp_path / engines.DOCKER_26).mkdir()
    monkeypatch.setattr(engines, "require_binary", lambda name, package: f"/usr/sbin/{name}")
    docker = engines.binaries(engines.DOCKER_26)
    assert docker.server == str(tmp_path / engines.DOCKER_26 / "usr/sbin/dockerd")
    assert docker.env()["PATH"].startswith(str(tmp_path / engines.DOCKER_26 / "usr/bin") + ":")
    assert not docker.is_podman
