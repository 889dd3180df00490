"""Run the `janitor` console script as an operator would: a subprocess with JANITOR_* env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from janitor.children import json_lines
from janitor.model import Task
from janitor.settings import Settings
from janitor.tick import sweep_host

JANITOR = str(Path(sys.executable).with_name("janitor"))
# Ages in these tests are seconds, so the sweeps must not wait on long default timeouts.
FAST = {"JANITOR_STOP_TIMEOUT": "0s", "JANITOR_DOCKER_TIMEOUT": "5s", "JANITOR_LOG_LEVEL": "DEBUG"}


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def reports(self) -> list[dict[str, Any]]:
        parsed = json.loads(self.stdout)
        assert isinstance(parsed, list), self.stdout
        return parsed

    def report(self, host: str, task: str) -> dict[str, Any]:
        matches = [r for r in self.reports if r["host"] == host and r["task"] == task]
        assert len(matches) == 1, f"{host} {task}: {self.reports}"
        return matches[0]

    def log_events(self) -> list[dict[str, Any]]:
        return json_lines(self.stderr.splitlines())


def janitor_env(
    hosts: Mapping[str, str], redis_url: str | None = None, **overrides: str
) -> dict[str, str]:
    """A clean environment: no JANITOR_* from the caller's shell leaks into the sweep."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JANITOR_")}
    env["JANITOR_HOSTS"] = ",".join(f"{name}={url}" for name, url in hosts.items())
    # Port 1 on loopback refuses at once: a sweep "without Redis" unless a test gives one.
    env["JANITOR_REDIS_URL"] = redis_url or "redis://127.0.0.1:1/0"
    env.update(FAST)
    env.update({f"JANITOR_{k.upper()}": v for k, v in overrides.items()})
    return env


def run_janitor(args: Sequence[str], env: Mapping[str, str], timeout: float = 120) -> Run:
    done = subprocess.run(
        [JANITOR, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def sweep_json(env: Mapping[str, str], *extra: str) -> Run:
    return run_janitor(["sweep", "--json", *extra], env)


def start_janitor(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """The `janitor` command in the background, its output captured; end it with `finish`."""
    return subprocess.Popen(
        [JANITOR, *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> Run:
    """Wait up to `timeout` for a background `janitor`; past it, kill it and fail."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(
            f"janitor {proc.args} still running after {timeout:.0f} s; stderr:\n{stderr[-3000:]}"
        ) from None
    return Run(proc.returncode, stdout, stderr)


def sweep_in_process(host_name: str, url: str, task: Task, **overrides: str) -> dict[str, Any]:
    """One sweep in this process, for tests where the CLI's start-up time (seconds on a loaded
    machine) would age a container past its budget between planting and deciding."""
    fast = {k.removeprefix("JANITOR_").lower(): v for k, v in FAST.items()}
    settings = Settings(hosts=f"{host_name}={url}", **{**fast, **overrides})  # type: ignore[arg-type]
    return sweep_host(settings, host_name, task, redis_client=None).to_dict()
