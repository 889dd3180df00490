"""The systemd units of the production shape: a worker and a beat per Docker host.

`systemd-analyze verify` reads them as systemd would (with the project's own environment in
place of /opt/container-janitor), and the hardening and lean options the README promises are
held to the files here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from janitor.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
INSTALLED_VENV = "/opt/container-janitor/.venv"
TEMPLATES = ("janitor-worker@.service", "janitor-beat@.service")
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "CapabilityBoundingSet": "",
    "User": "janitor",
    "EnvironmentFile": "/etc/container-janitor/%i.env",
}


def _directives(template: str) -> dict[str, str]:
    text = (UNITS / template).read_text().replace("\\\n", " ")
    return dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE))


def test_systemd_analyze_verifies_both_units(tmp_path: Path) -> None:
    venv = str(Path(sys.executable).parent.parent)
    for template in TEMPLATES:
        unit = (UNITS / template).read_text().replace(INSTALLED_VENV, venv)
        (tmp_path / template).write_text(unit)
    instances = [str(tmp_path / t.replace("@.", "@build-7.")) for t in TEMPLATES]
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *instances],
        capture_output=True,
        text=True,
        check=False,
    )
    # A directive systemd cannot parse is only a warning: none may be printed either.
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_unit_is_hardened_and_runs_as_the_janitor_user(template: str) -> None:
    directives = _directives(template)
    assert {k: directives.get(k) for k in HARDENING} == HARDENING
    assert "--quiet" in directives["ExecStart"].split(), "no banner among the JSON lines"


def test_the_worker_is_lean_and_reaches_the_socket_through_its_group() -> None:
    worker = _directives("janitor-worker@.service")
    assert worker["SupplementaryGroups"] == "docker"
    command = worker["ExecStart"].split()
    assert {"--without-gossip", "--without-mingle"} <= set(command)
    assert "--hostname=janitor-%i@%H" in command


def test_beat_keeps_its_schedule_in_its_own_state_directory() -> None:
    beat = _directives("janitor-beat@.service")
    assert beat["StateDirectory"] == "container-janitor/%i"
    assert "--schedule=/var/lib/container-janitor/%i/celerybeat-schedule" in beat["ExecStart"]


def test_the_example_environment_file_is_a_valid_configuration() -> None:
    lines = (UNITS / "host.env.example").read_text().splitlines()
    entries = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    fields = {name.removeprefix("JANITOR_").lower(): value for name, value in entries.items()}
    settings = load_settings(**fields)
    assert [host.name for host in settings.hosts] == ["build-7"]
