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
    (unpacked / "usr/bin").mkdir(parents=True)
    podman = engines.binaries(engines.PODMAN_4)
    assert podman.server == str(unpacked / "usr/bin/podman")
    assert podman.is_podman


def test_a_release_the_matrix_does_not_know_is_said_plainly(on: Callable[[str], None]) -> None:
    on("VERSION_CODENAME=sid\nID=debian\n")
    with pytest.raises(RuntimeError, match="names sid release: the engine matrix knows"):
        engines.machine_release()
