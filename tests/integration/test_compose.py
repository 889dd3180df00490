"""The compose path as the README gives it, from a fresh clone, on a host with no registry and
no network at all: `bash scripts/wheelhouse.sh`, `bash scripts/compose-env.sh`, `docker compose
up -d --build`, then the CLI in the worker's container and a real sweep.

The Docker host is a private dockerd inside a network namespace made here, which holds nothing
but loopback: any pull (a BuildKit frontend, a base image) or package download would fail the
build. Compose v2 and buildx are Debian 13's (sandbox.engines.compose_plugins), the base
images Debian 12 stand-ins (sandbox.base_images). Compose's bridge network lives in that
namespace, never on the machine's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from sandbox.base_images import PYTHON_IMAGE, REDIS_IMAGE, import_stand_ins, make_rootfs
from sandbox.daemons import PrivateDaemon
from sandbox.engines import compose_plugins
from sandbox.image import IMAGE as TEST_IMAGE
from sandbox.image import ensure_test_image

ROOT = Path(__file__).resolve().parents[2]
PROJECT_IMAGE = "container-janitor:latest"
SERVICES = ("redis", "worker", "beat", "flower")
JANITOR_SERVICES = ("worker", "beat", "flower")
# The README's "put any JANITOR_* variable in .env": a grace and a tick short enough to see a
# removal within the test.
TEST_SETTINGS = {"JANITOR_STOPPED_GRACE": "1s", "JANITOR_REMOVE_INTERVAL": "15s"}
BUILD_TIMEOUT = 600
REMOVAL_WAIT = 120

pytestmark = pytest.mark.timeout(1200)


@dataclass
class Project:
    """The fresh clone and the environment of a new shell that talks to the private daemon."""

    clone: Path
    env: dict[str, str]
    api: docker.APIClient
    netns: str

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            check=False,
            cwd=self.clone,
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def compose(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("docker", "compose", *args, timeout=timeout)

    def container(self, service: str) -> str:
        done = self.compose("ps", "--all", "--quiet", service)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def _shell_env(daemon: PrivateDaemon, docker_config: Path) -> dict[str, str]:
    # A new shell's: nothing compose reads from `.env` (nor the tests' own JANITOR_*), so that
    # only the README's steps supply it.
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JANITOR_", "DOCKER_", "FLOWER_", "COMPOSE_"))
    }
    return inherited | {"DOCKER_HOST": daemon.url, "DOCKER_CONFIG": str(docker_config)}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    work = tmp_path_factory.mktemp("compose")
    plugins = compose_plugins()
    docker_config = work / "docker-config"
    (docker_config / "cli-plugins").mkdir(parents=True)
    for plugin in ("docker-compose", "docker-buildx"):
        (docker_config / "cli-plugins" / plugin).symlink_to(plugins / plugin)
    tarball = make_rootfs(work)
    netns = f"janitor-compose-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        with PrivateDaemon("compose", netns=netns) as daemon:
            api = daemon.api()
            import_stand_ins(api, tarball)
            ensure_test_image(api)
            clone = work / "clone"
            subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
            project = Project(clone, _shell_env(daemon, docker_config), api, netns)
            yield project
            project.compose("down", "--volumes", timeout=120)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)


@pytest.fixture(scope="module")
def started(project: Project) -> Project:
    """The README's steps, in order; the test settings appended to `.env` as it says."""
    for script in ("wheelhouse.sh", "compose-env.sh"):
        done = project.run("bash", f"scripts/{script}", timeout=300)
        assert done.returncode == 0, f"{script}: {done.stderr}"
    with (project.clone / ".env").open("a") as dot_env:
        dot_env.writelines(f"{key}={value}\n" for key, value in TEST_SETTINGS.items())
    # --wait: until every service's healthcheck passes (the worker's first comes after 60 s).
    done = project.compose("up", "-d", "--build", "--wait", timeout=BUILD_TIMEOUT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return project


def test_the_network_namespace_reaches_nothing(project: Project) -> None:
    # What makes the build below offline: no default route, and no link but loopback and
    # dockerd's own bridge (this test runs first, before compose adds its network).
    default = subprocess.run(
        ["ip", "-n", project.netns, "route", "show", "default"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert default.stdout.strip() == ""
    links = subprocess.run(
        ["ip", "-n", project.netns, "-o", "link", "show"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(line.split()[1] for line in links.stdout.splitlines()) == ["docker0:", "lo:"]


def test_compose_builds_offline_and_every_service_is_healthy(started: Project) -> None:
    done = started.compose("ps", "--all", "--format", "json")
    assert done.returncode == 0, done.stderr
    # Compose 2.21 and later print one JSON object per line.
    states = {
        entry["Service"]: (entry["State"], entry["Health"])
        for entry in map(json.loads, done.stdout.splitlines())
    }
    assert states == {service: ("running", "healthy") for service in SERVICES}
    tags = {tag for image in started.api.images() for tag in image["RepoTags"] or ()}
    # Nothing pulled: no BuildKit frontend, nothing but the stand-ins and what was built.
    assert tags == {PYTHON_IMAGE, REDIS_IMAGE, PROJECT_IMAGE, TEST_IMAGE}


def test_the_cli_runs_in_the_worker_container(started: Project) -> None:
    done = started.compose("exec", "-T", "worker", "janitor", "check", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    (host,) = [check for check in report["checks"] if check["subject"].startswith("host ")]
    # Through the socket compose-env.sh found, mounted where JANITOR_HOSTS looks.
    assert host["message"].startswith("Docker "), host
    version = started.compose("exec", "-T", "worker", "janitor", "--version")
    assert version.stdout.startswith("janitor ")


def test_the_deployment_removes_a_stopped_managed_container(started: Project) -> None:
    api = started.api
    container = api.create_container(
        TEST_IMAGE,
        command=["true"],
        labels={"janitor.managed": "true"},
        host_config=api.create_host_config(network_mode="none"),
    )
    api.start(container)
    deadline = time.monotonic() + REMOVAL_WAIT
    while time.monotonic() < deadline:
        if not api.containers(all=True, filters={"id": container["Id"]}):
            break
        time.sleep(1)
    else:
        logs = started.compose("logs", "--no-color", "worker").stdout[-4000:]
        pytest.fail(f"the stopped container was not removed in {REMOVAL_WAIT} s:\n{logs}")
    bystanders = {name for entry in api.containers(all=True) for name in entry["Names"]}
    assert len(bystanders) == len(SERVICES), "the janitor spared its own project"


@pytest.mark.parametrize("service", JANITOR_SERVICES)
def test_every_janitor_service_logs_json_lines(started: Project, service: str) -> None:
    # The engine's own log of the container, not compose's view (which adds its own prefixes).
    logs = started.api.logs(started.container(service), stdout=True, stderr=True).decode()
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines, f"{service} logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_a_classic_build_is_offline_too(started: Project) -> None:
    done = started.run(
        "docker", "build", "--quiet", "--tag", "container-janitor:classic", ".",
        timeout=BUILD_TIMEOUT, DOCKER_BUILDKIT="0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    started.api.remove_image("container-janitor:classic")


def test_compose_down_works_from_a_new_shell(started: Project) -> None:
    # The shell's environment holds neither DOCKER_GID nor FLOWER_BASIC_AUTH: `.env` does.
    assert "DOCKER_GID" not in started.env
    done = started.compose("down", timeout=120)
    assert done.returncode == 0, done.stderr
    assert not started.api.containers(all=True, filters={"label": "com.docker.compose.project"})
