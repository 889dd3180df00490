"""The compose path as the README gives it, from a fresh clone, against a daemon with no registry
and no network: `bash scripts/wheelhouse.sh`, `bash scripts/compose-env.sh`, `docker compose up
-d --build`, then the CLI in the worker's container and a real sweep.

The Docker host is a private dockerd inside a network namespace made here, with no default
route and no link but loopback and dockerd's own bridge: any pull (a BuildKit frontend, a base
image) or package download during the build would fail it. The test itself needs what the
README's steps need before that: the package index (the wheelhouse) and a Debian mirror (the
stand-in base images, sandbox.base_images). Compose v2 and buildx are Debian 13's
(sandbox.engines.compose_plugins). Compose's bridge network lives in that namespace, never on
the machine's. The clone holds the checkout's tracked files as they are, committed or not.
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
from sandbox.netns import inside, network_namespace

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
    # The namespace's routes and links before compose made anything there.
    default_route: str
    links: list[str]

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

    def states(self) -> dict[str, tuple[str, str]]:
        """Each service's (state, health), from `docker compose ps`."""
        done = self.compose("ps", "--all", "--format", "json")
        assert done.returncode == 0, done.stderr
        # Compose 2.21 and later print one JSON object per line.
        entries = map(json.loads, done.stdout.splitlines())
        return {entry["Service"]: (entry["State"], entry["Health"]) for entry in entries}

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


def _fresh_clone(clone: Path) -> None:
    """A clone of this checkout at its tracked files as they are now: HEAD, or a commit of
    the uncommitted changes made without touching the checkout (`git stash create`)."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    stash = subprocess.run(
        ["git", "-C", str(ROOT), "stash", "create"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if stash:
        subprocess.run(["git", "-C", str(clone), "fetch", "--quiet", str(ROOT), stash], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", stash], check=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    work = tmp_path_factory.mktemp("compose")
    plugins = compose_plugins()
    docker_config = work / "docker-config"
    (docker_config / "cli-plugins").mkdir(parents=True)
    for plugin in ("docker-compose", "docker-buildx"):
        (docker_config / "cli-plugins" / plugin).symlink_to(plugins / plugin)
    tarball = make_rootfs(work)
    with (
        network_namespace("janitor-compose") as netns,
        PrivateDaemon("compose", netns=netns) as daemon,
    ):
        api = daemon.api()
        import_stand_ins(api, tarball)
        ensure_test_image(api)
        clone = work / "clone"
        _fresh_clone(clone)
        links = inside(netns, "ip", "-o", "link", "show").splitlines()
        project = Project(
            clone,
            _shell_env(daemon, docker_config),
            api,
            default_route=inside(netns, "ip", "route", "show", "default").strip(),
            links=sorted(line.split()[1].rstrip(":") for line in links),
        )
        yield project
        # As from a new shell: its environment holds neither DOCKER_GID nor FLOWER_BASIC_AUTH,
        # which compose refuses to run without; `.env` does.
        down = project.compose("down", "--volumes", timeout=120)
        assert down.returncode == 0, down.stderr


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
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + _why(project)
    return project


def _why(project: Project) -> str:
    """What the services said and what their healthchecks answered: the daemon goes with the
    fixture, and these with it."""
    logs = project.compose("logs", "--no-color", "--tail", "30").stdout
    health = []
    for entry in project.api.containers(all=True):
        state = project.api.inspect_container(entry["Id"])["State"]
        health.append(f"{entry['Names'][0]}: {json.dumps(state.get('Health'))[-1500:]}")
    return "\n--- logs\n" + logs[-6000:] + "\n--- health\n" + "\n".join(health)


def test_the_daemon_reaches_no_network(project: Project) -> None:
    # What makes the build offline: no way out of the namespace dockerd runs in.
    assert project.default_route == ""
    assert project.links == ["docker0", "lo"]


def test_compose_builds_offline_and_every_service_is_healthy(started: Project) -> None:
    assert started.states() == {service: ("running", "healthy") for service in SERVICES}
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
    # The janitor's own project, stopped containers of its own kind, is spared and still up.
    assert {service: state for service, (state, _) in started.states().items()} == dict.fromkeys(
        SERVICES, "running"
    )
    removed = started.api.logs(started.container("worker")).decode()
    assert container["Id"] in removed, "the worker's log names the container it removed"


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
