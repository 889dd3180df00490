"""The CLI starts like a CLI: what each command line imports, read from a real process.

Structural, not a timing: the heavy libraries are named, and a command that does not need one
must not import it. Their cost is measured by `python -m bench --only startup`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JANITOR = str(Path(sys.executable).with_name("janitor"))
# Each costs tens of milliseconds or more to import; together they were a second of `--help`.
HEAVY = frozenset({
    "celery", "kombu", "docker", "requests", "urllib3", "redis", "pydantic",
    "pydantic_settings", "structlog", "prometheus_client", "rich",
})  # fmt: skip
# What a command leaves in sys.modules, printed by the wrapper below when it exits.
MODULES_AT_EXIT = """
import json, sys
from janitor.cli import main
try:
    sys.exit(main(sys.argv[1:]))
finally:
    print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    # A socket that is not there and a port that refuses: the sweep fails at once, offline.
    env.update(
        JANITOR_HOSTS="gone=unix:///nonexistent/docker.sock",
        JANITOR_REDIS_URL="redis://127.0.0.1:1/0",
    )
    return env


def _imported_top_levels(importtime_stderr: str) -> set[str]:
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["sweep", "--help"]])
def test_help_and_version_import_none_of_the_heavy_libraries(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", JANITOR, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    imported = _imported_top_levels(done.stderr)
    assert "janitor" in imported, "the console script was not the one traced"
    assert not imported & HEAVY, f"janitor {' '.join(args)} imported {imported & HEAVY}"


@pytest.mark.parametrize(
    ("args", "needed", "never"),
    [
        (
            ["sweep", "--json"],
            {"structlog", "docker", "redis", "pydantic_settings"},
            {"rich", "celery", "prometheus_client"},
        ),
        (["status"], {"redis", "pydantic_settings"}, {"docker", "rich", "celery"}),
    ],
)
def test_a_command_imports_what_it_uses_and_no_more(
    args: list[str], needed: set[str], never: set[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", MODULES_AT_EXIT, *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, f"no host, no Redis: janitor {args[0]} must fail, not crash"
    modules = set(json.loads(done.stderr.splitlines()[-1]))
    assert needed <= modules
    assert not never & modules, f"janitor {args[0]} imported {never & modules}"
