"""`python -m sandbox.demo` end to end: a real sandbox dockerd, workload, service and Flower,
then nothing left behind."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from janitor.children import free_port
from sandbox import demo

# Long enough for the ghosts (20 s budget, 5 s sweeps) to be killed and judged with slack.
DURATION = "45s"
# Setup, a slow service start on a loaded machine, the workload, and teardown.
RUN_TIMEOUT = 420
REPO_ROOT = Path(__file__).resolve().parents[2]


def flower_get(port: int, path: str, auth: str | None) -> tuple[int, Any]:
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return response.status, json.loads(body) if response.status == 200 else None


def pgrep(pattern: str) -> list[str]:
    done = subprocess.run(
        ["pgrep", "-af", pattern], capture_output=True, text=True, check=False, timeout=10
    )
    own = str(os.getpid())
    return [line for line in done.stdout.splitlines() if not line.startswith(f"{own} ")]


def demo_env() -> dict[str, str]:
    # Neither the caller's JANITOR_* nor a Flower password of theirs may shape the demo.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JANITOR_") and k != "FLOWER_BASIC_AUTH"
    }


@pytest.fixture
def demo_process() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.demo", "--duration", DURATION, "--flower-port", str(port)],
        cwd=REPO_ROOT,
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            # As a CI timeout would: the demo tears down on SIGTERM as on Ctrl-C.
            process.send_signal(signal.SIGTERM)
            process.wait(120)
        assert process.stdout is not None
        process.stdout.close()


def test_demo_kills_removes_spares_and_leaves_nothing_behind(
    demo_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = demo_process
    assert process.stdout is not None
    lines: list[str] = []
    auth = ""
    flower_checked = False
    flower_saw_a_sweep = False
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if match := re.search(
            r"Flower\s+http://127\.0\.0\.1:(\d+)/ \(user (\S+), password (\S+)\)", line
        ):
            assert int(match[1]) == port
            auth = f"{match[2]}:{match[3]}"
        if "janitor service up" in line:
            # While the demo runs: Flower answers with the printed credentials, only with them.
            assert auth, "\n".join(lines)
            status, workers = flower_get(port, "/api/workers?refresh=1", auth)
            assert status == 200
            assert workers, "Flower lists no worker"
            assert flower_get(port, "/api/workers", None)[0] == 401
            flower_checked = True
        if "killed demo-ghost" in line and not flower_saw_a_sweep:
            status, tasks = flower_get(port, "/api/tasks?taskname=janitor.kill_ghosts", auth)
            assert status == 200
            flower_saw_a_sweep = any(t.get("state") == "SUCCESS" for t in tasks.values())
    code = process.wait(RUN_TIMEOUT)
    output = "\n".join(lines)

    assert code == 0, output
    assert flower_checked, output
    assert flower_saw_a_sweep, output
    totals = re.search(r"janitor total:\s+killed (\d+), removed (\d+)", output)
    assert totals, output
    assert int(totals[1]) >= 1, output
    assert int(totals[2]) >= 1, output
    protected = re.search(r"protected:\s+alive (\d+)/(\d+)", output)
    assert protected, output
    assert protected[1] == protected[2] != "0", output
    assert re.search(r"unmanaged:\s+alive 1/1", output), output
    assert "result: ok" in output

    assert_nothing_left(output, port)


def test_demo_tears_down_on_ctrl_c(demo_process: tuple[subprocess.Popen[str], int]) -> None:
    process, port = demo_process
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        # Interrupted mid-run: containers running, the worker sweeping, Flower serving.
        if re.search(r"janitor:\s+[1-9]\d* sweeps", line):
            process.send_signal(signal.SIGINT)
            break
    lines += [line.rstrip("\n") for line in process.stdout]
    code = process.wait(RUN_TIMEOUT)
    output = "\n".join(lines)

    assert "interrupted" in output, output
    # Nothing was overdue yet, so the verdict holds: an interrupted demo still judges.
    assert code == 0, output
    assert "all stopped and removed" in output
    assert_nothing_left(output, port)


def assert_nothing_left(output: str, flower_port: int) -> None:
    """No process or file of the demo remains: dockerd, containerd and shims name the sandbox
    dir, the worker its schedule under the demo dir, Flower its port, redis its address."""
    sandbox = re.search(r"(/tmp/jt-[^/\s]+)/docker\.sock", output)
    demo_dir = re.search(r"temp dir\s+(\S+)", output)
    redis_port = re.search(r"redis://127\.0\.0\.1:(\d+)/0", output)
    assert sandbox, output
    assert demo_dir, output
    assert redis_port, output
    for path in (sandbox[1], demo_dir[1]):
        assert not Path(path).exists(), path
        assert pgrep(path) == []
    assert pgrep(f"redis-server 127.0.0.1:{redis_port[1]}") == []
    assert pgrep(f"flower.*--port={flower_port}") == []


def test_demo_needs_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert demo.main(["--duration", "5s"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "needs root" in err


def test_demo_rejects_a_bad_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--duration", "soon"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--duration 'soon' is invalid" in err
