"""The deployment files (docker-compose.yml, Dockerfile, .dockerignore) read as data.

No Docker engine is needed: these tests hold the files to the contract (every JANITOR_*
variable passed with the contract's default, the socket on the worker alone, Flower on
loopback behind a password) so that a new setting or an edit cannot drift from them unseen.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from janitor import service as janitor_service
from janitor.settings import ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

JANITOR_SERVICES = ("worker", "beat", "flower")
SERVICES = ("redis", *JANITOR_SERVICES)
SOCKET = "/var/run/docker.sock"
IMAGE = "container-janitor:latest"
COMPOSE_REDIS_URL = "redis://redis:6379/0"
# Variables the compose file may interpolate besides the JANITOR_* settings.
OPERATOR_VARIABLES = {"DOCKER_SOCKET", "DOCKER_GID", "FLOWER_BASIC_AUTH", "FLOWER_PORT"}
COMPOSE_ENV_SCRIPT = ROOT / "scripts" / "compose-env.sh"
STATE_DIR = "/var/lib/container-janitor"

DEFAULTED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):-(?P<default>[^}]*)\}")
REQUIRED = re.compile(r"\$\{(?P<name>[A-Z0-9_]+):\?(?P<message>[^}]+)\}")
INTERPOLATED = re.compile(r"\$\{(?P<name>[A-Za-z0-9_]+)")


def _variables() -> list[str]:
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = [item.partition("=") for item in environment]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: (None if value is None else str(value)) for key, value in environment.items()}


def _labels(service: Mapping[str, Any]) -> dict[str, str]:
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        return dict(item.partition("=")[::2] for item in labels)
    return {key: str(value) for key, value in labels.items()}


def _command(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


def _mount_ends(service: Mapping[str, Any]) -> list[str]:
    """Source and target of every volume of the service, short or long syntax."""
    ends: list[str] = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            ends.extend(volume.split(":")[:2])
        else:
            ends.extend(str(volume.get(key, "")) for key in ("source", "target"))
    return ends


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, Mapping):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []


def _compose_defaults(services: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """JANITOR_X -> the default written as ${JANITOR_X:-default}, or None when passed through."""
    defaults: dict[str, str | None] = {}
    for name, value in _environment(services["worker"]).items():
        if not name.startswith(ENV_PREFIX):
            continue
        if value is None:
            defaults[name] = None
            continue
        match = DEFAULTED.fullmatch(value)
        assert match, f"{name}: {value!r} is not ${{{name}:-default}}"
        assert match["name"] == name, f"{name} interpolates {match['name']}"
        defaults[name] = match["default"]
    return defaults


# --- docker-compose.yml ------------------------------------------------------------------


def test_compose_has_the_four_services(services: dict[str, Any]) -> None:
    assert set(services) == set(SERVICES)


def test_only_the_worker_mounts_the_docker_socket(services: dict[str, Any]) -> None:
    assert SOCKET in _mount_ends(services["worker"])
    for name, service in services.items():
        if name != "worker":
            assert not any("docker.sock" in end for end in _mount_ends(service)), name


def test_a_missing_socket_is_refused_not_made_a_directory(services: dict[str, Any]) -> None:
    (mount,) = [v for v in services["worker"]["volumes"] if isinstance(v, dict)]
    assert mount["type"] == "bind"
    assert mount["target"] == SOCKET
    assert mount["bind"]["create_host_path"] is False


def test_only_the_worker_joins_the_socket_group(services: dict[str, Any]) -> None:
    (group,) = services["worker"]["group_add"]
    # Required, not defaulted: the docker group's id differs from host to host.
    match = REQUIRED.fullmatch(str(group))
    assert match, group
    assert match["name"] == "DOCKER_GID"
    for name in SERVICES:
        if name != "worker":
            assert "group_add" not in services[name], name


def test_flower_is_published_on_loopback_only(services: dict[str, Any]) -> None:
    ports = services["flower"]["ports"]
    assert ports
    for published in ports:
        if isinstance(published, str):
            # FLOWER_PORT moves the published port, never the address it is bound to.
            port = DEFAULTED.sub(lambda match: match["default"], published)
            host_ip, _, rest = port.partition(":")
            assert host_ip == "127.0.0.1", port
            assert rest.count(":") == 1, port
        else:
            assert published.get("host_ip") in ("127.0.0.1", "::1"), published


def test_flower_requires_basic_auth(services: dict[str, Any]) -> None:
    value = _environment(services["flower"])["FLOWER_BASIC_AUTH"]
    assert value is not None
    match = REQUIRED.fullmatch(value)
    assert match, f"FLOWER_BASIC_AUTH={value!r} must use ${{FLOWER_BASIC_AUTH:?message}}"
    assert match["name"] == "FLOWER_BASIC_AUTH"


def test_no_service_but_flower_publishes_a_port(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if name != "flower":
            assert not service.get("ports"), name


@pytest.mark.parametrize("service", JANITOR_SERVICES)
def test_every_setting_is_passed_to_the_celery_services(
    services: dict[str, Any], service: str
) -> None:
    missing = set(_variables()) - set(_environment(services[service]))
    assert not missing, f"{service} lacks {sorted(missing)}"


def test_compose_interpolates_only_known_variables(compose: dict[str, Any]) -> None:
    used = {match["name"] for text in _strings(compose) for match in INTERPOLATED.finditer(text)}
    assert used <= set(_variables()) | OPERATOR_VARIABLES, used


def test_compose_defaults_are_the_settings_defaults(
    services: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = _compose_defaults(services)
    assert set(defaults) == set(_variables())
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, default in defaults.items():
        if default is not None:
            monkeypatch.setenv(name, default)

    settings = load_settings()

    for field_name, field in Settings.model_fields.items():
        expected = COMPOSE_REDIS_URL if field_name == "redis_url" else field.default
        assert getattr(settings, field_name) == expected, field_name


def test_passed_through_variables_default_to_unset(services: dict[str, Any]) -> None:
    # `JANITOR_X:` with no value is passed on only when set; unset must mean the default.
    passed_through = [name for name, value in _compose_defaults(services).items() if value is None]
    assert passed_through == [
        "JANITOR_TLS_CA_CERT",
        "JANITOR_TLS_CLIENT_CERT",
        "JANITOR_TLS_CLIENT_KEY",
        "JANITOR_IMAGE_DISK_BUDGET",
        "JANITOR_DOCKER_ROOT",
    ]
    for name in passed_through:
        assert Settings.model_fields[name.removeprefix(ENV_PREFIX).lower()].default is None


def test_the_celery_services_share_one_environment(services: dict[str, Any]) -> None:
    worker = _environment(services["worker"])
    assert _environment(services["beat"]) == worker
    flower = _environment(services["flower"])
    assert {key: value for key, value in flower.items() if key.startswith(ENV_PREFIX)} == worker


def test_every_service_is_protected(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert _labels(service).get("janitor.protect") == "true", name


def test_the_commands_run_the_celery_app(services: dict[str, Any]) -> None:
    for name in JANITOR_SERVICES:
        # --quiet: no banner among the JSON log lines.
        assert _command(services[name])[:5] == ["celery", "-A", "janitor", "--quiet", name], name


@pytest.mark.parametrize("service", JANITOR_SERVICES)
def test_every_janitor_service_has_a_healthcheck(services: dict[str, Any], service: str) -> None:
    check = services[service]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL"), check
    assert check["interval"] == "60s", check
    assert check["timeout"] == "20s", check


def test_beat_keeps_its_schedule_where_it_can_write(services: dict[str, Any]) -> None:
    beat = services["beat"]
    command = _command(beat)
    schedule = command[command.index("--schedule") + 1]
    assert schedule.startswith(STATE_DIR + "/")
    assert f"beat-state:{STATE_DIR}" in beat["volumes"]


def _run_compose_env(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    scripts = tmp_path / "scripts"
    scripts.mkdir(exist_ok=True)
    (scripts / COMPOSE_ENV_SCRIPT.name).write_text(COMPOSE_ENV_SCRIPT.read_text())
    inherited = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_SOCKET")}
    return subprocess.run(
        ["bash", str(scripts / COMPOSE_ENV_SCRIPT.name)],
        check=False,
        env={**inherited, **env},
        capture_output=True,
        text=True,
    )


def _bound_socket(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    return listener


def _dot_env(tmp_path: Path) -> dict[str, str]:
    lines = (tmp_path / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_the_compose_environment_file_is_private_and_kept(tmp_path: Path) -> None:
    engine_socket = str(tmp_path / "docker.sock")
    with _bound_socket(tmp_path / "docker.sock"):
        first_run = _run_compose_env(tmp_path, DOCKER_SOCKET=engine_socket)
        first = (tmp_path / ".env").read_text()
        second_run = _run_compose_env(tmp_path, DOCKER_SOCKET=engine_socket)
    assert first_run.returncode == second_run.returncode == 0, first_run.stderr
    assert (tmp_path / ".env").read_text() == first, "a second run keeps the password"
    assert oct((tmp_path / ".env").stat().st_mode & 0o777) == "0o600"
    values = _dot_env(tmp_path)
    assert values["DOCKER_SOCKET"] == str(tmp_path / "docker.sock")
    assert values["DOCKER_GID"] == str((tmp_path / "docker.sock").stat().st_gid)
    user, _, password = values["FLOWER_BASIC_AUTH"].partition(":")
    assert user == "admin"
    assert len(password) >= 20
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_compose_environment_takes_the_socket_from_a_unix_docker_host(tmp_path: Path) -> None:
    with _bound_socket(tmp_path / "engine.sock"):
        done = _run_compose_env(tmp_path, DOCKER_HOST=f"unix://{tmp_path / 'engine.sock'}")
    assert done.returncode == 0, done.stderr
    assert _dot_env(tmp_path)["DOCKER_SOCKET"] == str(tmp_path / "engine.sock")


def test_the_compose_environment_follows_a_new_socket_and_keeps_the_password(
    tmp_path: Path,
) -> None:
    with _bound_socket(tmp_path / "one.sock"), _bound_socket(tmp_path / "two.sock"):
        os.chown(tmp_path / "two.sock", -1, 1)
        assert _run_compose_env(tmp_path, DOCKER_SOCKET=str(tmp_path / "one.sock")).returncode == 0
        first = _dot_env(tmp_path)
        assert _run_compose_env(tmp_path, DOCKER_SOCKET=str(tmp_path / "two.sock")).returncode == 0
        second = _dot_env(tmp_path)
        # A later run with nothing set keeps to the socket .env names.
        assert _run_compose_env(tmp_path).returncode == 0
        third = _dot_env(tmp_path)
    assert second["DOCKER_SOCKET"] == str(tmp_path / "two.sock")
    assert second["DOCKER_GID"] == "1" != first["DOCKER_GID"]
    assert second["FLOWER_BASIC_AUTH"] == first["FLOWER_BASIC_AUTH"]
    assert third == second


def test_the_compose_environment_refuses_a_daemon_it_cannot_mount(tmp_path: Path) -> None:
    done = _run_compose_env(tmp_path, DOCKER_HOST="tcp://10.0.0.1:2376")
    assert done.returncode == 1
    assert "is not a unix socket" in done.stderr
    assert not (tmp_path / ".env").exists()


def test_the_compose_environment_refuses_a_missing_socket(tmp_path: Path) -> None:
    done = _run_compose_env(tmp_path, DOCKER_SOCKET=str(tmp_path / "nothing.sock"))
    assert done.returncode == 1
    assert "is not a socket" in done.stderr
    assert not (tmp_path / ".env").exists()


def test_the_celery_services_run_the_built_image_after_redis(services: dict[str, Any]) -> None:
    for name in JANITOR_SERVICES:
        service = services[name]
        assert service["image"] == IMAGE, name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_the_image_is_built_once_and_never_pulled(services: dict[str, Any]) -> None:
    builders = [name for name in JANITOR_SERVICES if "build" in services[name]]
    assert builders == ["worker"]
    assert services["worker"]["build"] == "."
    assert services["worker"]["pull_policy"] == "build"
    for name in ("beat", "flower"):
        assert services[name]["pull_policy"] == "never", name
        # Started alone, each brings the worker, which builds the image they run.
        assert services[name]["depends_on"]["worker"]["condition"] == "service_started", name


def test_redis_is_persistent_and_checked(services: dict[str, Any], compose: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert _command(redis)[-2:] == ["--appendonly", "yes"]
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_every_service_restarts(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name


def test_the_janitor_talks_to_the_compose_redis(services: dict[str, Any]) -> None:
    assert _compose_defaults(services)["JANITOR_REDIS_URL"] == COMPOSE_REDIS_URL


# --- Dockerfile -------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation"
    return instructions


def _arguments(keyword: str) -> list[str]:
    return [arguments for name, arguments in _instructions() if name == keyword]


def _index(keyword: str, fragment: str) -> int:
    """Position of the first KEYWORD instruction whose arguments hold the fragment."""
    for index, (name, arguments) in enumerate(_instructions()):
        if name == keyword and fragment in arguments:
            return index
    raise AssertionError(f"no {keyword} with {fragment!r} in the Dockerfile")


def test_dockerfile_builds_on_slim_python_311_alone() -> None:
    (base_argument,) = [a for a in _arguments("ARG") if a.startswith("BASE_IMAGE=")]
    base = base_argument.removeprefix("BASE_IMAGE=")
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-bookworm)?(@sha256:[0-9a-f]{64})?", base)
    # Both stages on that one image: an offline host needs nothing else.
    assert _arguments("FROM") == ["${BASE_IMAGE} AS build", "${BASE_IMAGE}"]
    # BuildKit pulls a frontend image from a registry for a `# syntax=` line.
    assert not re.search(r"^#\s*syntax=", DOCKERFILE.read_text(), flags=re.MULTILINE)


def test_dockerfile_installs_the_project_compiled_and_ships_only_the_environment() -> None:
    _, project = _instructions()[_index("RUN", "--no-deps .")]
    assert "uv pip install" in project
    assert " -e " not in project
    assert any("UV_COMPILE_BYTECODE=1" in env for env in _arguments("ENV"))
    final_stage = _instructions()[_index("FROM", "${BASE_IMAGE}") + 1 :]
    final_stage = final_stage[[name for name, _ in final_stage].index("FROM") :]
    copies = [arguments for name, arguments in final_stage if name == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = _arguments("USER")
    assert users, "the Dockerfile has no USER"
    user = users[-1].partition(":")[0]
    assert user not in ("root", "0")
    assert user in ("janitor", "10001")
    assert "--uid 10001" in " ".join(_arguments("RUN"))


def test_dockerfile_installs_from_the_lock_dependencies_first() -> None:
    (export,) = [run for run in _arguments("RUN") if "uv export" in run]
    assert all(flag in export for flag in ("--frozen", "--no-dev", "--no-emit-project"))
    assert "--require-hashes" in export
    # The lock is copied before the dependency layer, the code only after it.
    assert (
        _index("COPY", "uv.lock")
        < _index("RUN", "uv export")
        < _index("COPY", "janitor/")
        < _index("RUN", "--no-deps .")
    )


def test_dockerfile_takes_every_package_from_the_wheelhouse_when_it_is_filled() -> None:
    installs = [run for run in _arguments("RUN") if "pip install" in run]
    assert len(installs) == 3, installs
    assert all("$(cat /wheels/offline)" in run for run in installs)
    assert _index("COPY", "wheels/") < _index("RUN", "/wheels/offline")
    _, detection = _instructions()[_index("RUN", ">/wheels/offline")]
    assert "--no-index --find-links /wheels" in detection
    assert (ROOT / "wheels" / ".gitignore").is_file(), "a clone needs wheels/ for COPY"


def test_dockerfile_puts_the_venv_on_path_and_starts_a_worker() -> None:
    assert any("PATH=" in env and "/app/.venv/bin" in env for env in _arguments("ENV")), (
        "PATH lacks the venv"
    )
    (command,) = _arguments("CMD")
    assert json.loads(command)[:5] == ["celery", "-A", "janitor", "--quiet", "worker"]


# --- .dockerignore ----------------------------------------------------------------------


def _ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) in order, as Docker reads .dockerignore."""
    patterns: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                part, re.escape(part).replace(r"\[", "[").replace(r"\]", "]")
            )
        patterns.append((exception, re.compile(regex)))
    return patterns


def _is_ignored(path: str) -> bool:
    """Last matching pattern wins; a pattern matching a directory matches what is in it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    ignored = False
    for exception, regex in _ignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not exception
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".env",
        ".pytest_cache/README.md",
        ".hypothesis/examples/x",
        ".mypy_cache/3.11/x.json",
        "bench/results/run.json",
        "tests/conftest.py",
        "sandbox/daemons.py",
        "bench/cli.py",
        "janitor/__pycache__/settings.cpython-311.pyc",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _is_ignored(path)


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    sources = [
        source.rstrip("/")
        for arguments in _arguments("COPY")
        if "--from=" not in arguments
        for source in arguments.split()[:-1]
    ]
    assert "uv.lock" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else list(path.rglob("*.py"))
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not _is_ignored(relative), relative


# --- lean workers on a shared Redis ------------------------------------------------------------

LEAN = ["--without-gossip", "--without-mingle"]


def test_every_shipped_worker_command_runs_without_gossip_and_mingle(
    services: dict[str, Any],
) -> None:
    compose = _command(services["worker"])
    (dockerfile,) = _arguments("CMD")
    unit = (ROOT / "contrib" / "systemd" / "janitor-worker@.service").read_text()
    joined = unit.replace("\\\n", " ")
    (exec_start,) = [line for line in joined.splitlines() if line.startswith("ExecStart=")]
    shipped = {
        "compose": compose,
        "Dockerfile": json.loads(dockerfile),
        "systemd": shlex.split(exec_start),
    }
    for where, command in shipped.items():
        assert set(LEAN) <= set(command), where
        assert "--without-heartbeat" not in command, f"{where}: Flower's worker view needs it"
    assert set(LEAN) == set(janitor_service.LEAN_WORKER)
    assert "*LEAN_WORKER" in inspect.getsource(janitor_service.run), "janitor run's worker"
    readme = (ROOT / "README.md").read_text()
    assert "celery -A janitor worker --without-gossip --without-mingle" in readme
