"""The one lifecycle of child processes, on throwaway `sh` children: readiness, early exit,
escalation to SIGKILL, the whole process group, the exit registry and the JSON-log reader."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from janitor.children import Child, ChildError, free_port, json_lines, read_json_log, wait_for
from sandbox.procfs import is_alive


def sh(script: str, log_path: Path) -> Child:
    return Child("test child", ["sh", "-c", script], log_path=log_path)


def test_a_ready_child_is_waited_for_and_stopped_with_sigterm(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    child = sh(f"touch {marker}; exec sleep 60", tmp_path / "log")
    child.start()
    child.wait_ready(marker.exists, timeout=10)
    assert child.is_running
    assert child.stop(timeout=10) == -signal.SIGTERM
    assert not child.is_running
    assert child.stop() == -signal.SIGTERM  # again: the same answer, nothing signalled


def test_an_early_exit_fails_the_wait_at_once_with_the_log_tail(tmp_path: Path) -> None:
    child = sh("echo 'no config here'; exit 3", tmp_path / "log")
    child.start()
    started = time.monotonic()
    with pytest.raises(ChildError, match=r"exited with 3(.|\n)*no config here"):
        child.wait_ready(lambda: False, timeout=30)
    assert time.monotonic() - started < 10
    child.stop()


def test_a_child_never_ready_times_out_naming_what_it_waited_for(tmp_path: Path) -> None:
    child = sh("echo starting; exec sleep 60", tmp_path / "log")
    child.start()
    try:
        with pytest.raises(TimeoutError, match=r"test child to be listening(.|\n)*starting"):
            child.wait_ready(lambda: False, timeout=0.5, what="listening")
    finally:
        child.kill()


def test_sigterm_ignored_escalates_to_sigkill_of_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    # The shell ignores SIGTERM and so does its background grandchild (inherited).
    child = sh(f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait", tmp_path / "log")
    child.start()
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10, what="pid")
    grandchild = int(pid_file.read_text())
    started = time.monotonic()
    assert child.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 10
    wait_for(lambda: not is_alive(grandchild), timeout=5, what="the grandchild to die")


def test_a_child_left_running_is_stopped_at_interpreter_exit(tmp_path: Path) -> None:
    # In a Python of its own: the exit cleanup of this one would stop the session's daemons.
    script = (
        "from janitor.children import Child; "
        "child = Child('left', ['sleep', '60']); child.start(); print(child.pid)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    left = int(done.stdout)
    wait_for(lambda: not is_alive(left), timeout=5, what="the forgotten child to be stopped")


def test_json_lines_keep_the_objects_and_skip_the_rest(tmp_path: Path) -> None:
    lines = [
        "celery banner",
        '{"event": "a", "n": 1}',
        b'{"event": "b"}',
        "[1, 2]",
        '{"event": "a", "half": ',
    ]
    assert json_lines(lines) == [{"event": "a", "n": 1}, {"event": "b"}]
    assert json_lines(lines, "b") == [{"event": "b"}]
    log = tmp_path / "log"
    assert read_json_log(log) == []
    log.write_text("\n".join(str(line) for line in lines[:2]) + "\n")
    assert read_json_log(log, "a") == [{"event": "a", "n": 1}]


def test_free_port_can_be_bound() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
