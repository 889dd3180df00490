"""The demo's verdict, log reading and package check, on plain data with a fixed NOW."""

from __future__ import annotations

import json
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from janitor.model import Container, State
from sandbox import prerequisites
from sandbox.demo import BUDGETS, Budgets, ServiceLog, judge
from sandbox.workload import Kind, Planted

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
B = Budgets.from_strings(BUDGETS)
# Budget 20 s + kill interval 5 s + slack 10 s.
GHOST_OVERDUE = timedelta(seconds=36)


def container(cid: str, state: State, *, age: timedelta) -> Container:
    at = NOW - age
    finished = at if state is State.EXITED else None
    started = at if state in (State.RUNNING, State.EXITED) else None
    return Container(cid, cid, state, {}, at, started, finished)


def test_everything_done_is_ok() -> None:
    planted = [
        Planted("g", "ghost", Kind.GHOST),
        Planted("p", "protected", Kind.PROTECTED),
        Planted("u", "unmanaged", Kind.UNMANAGED),
        Planted("b", "burst", Kind.BURST),
    ]
    present = {
        "g": container("g", State.EXITED, age=timedelta(seconds=3)),
        "p": container("p", State.RUNNING, age=timedelta(minutes=5)),
        "u": container("u", State.RUNNING, age=timedelta(minutes=5)),
    }
    verdict = judge(planted, present, killed={"g": 1}, removed={"b": 1}, now=NOW, budgets=B)
    assert verdict.ok, verdict.problems
    assert "ghosts:         planted 1, killed 1" in verdict.lines
    assert "protected:      alive 1/1" in verdict.lines


def test_an_overdue_ghost_still_running_fails_and_a_young_one_does_not() -> None:
    planted = [Planted("old", "old", Kind.GHOST), Planted("young", "young", Kind.GHOST)]
    present = {
        "old": container("old", State.RUNNING, age=GHOST_OVERDUE),
        "young": container("young", State.RUNNING, age=GHOST_OVERDUE - timedelta(seconds=2)),
    }
    verdict = judge(planted, present, killed={}, removed={}, now=NOW, budgets=B)
    assert verdict.problems == ("old not killed: running for 36s",)


def test_a_protected_or_unmanaged_container_touched_fails() -> None:
    planted = [Planted("p", "p", Kind.PROTECTED), Planted("u", "u", Kind.UNMANAGED)]
    present = {"p": container("p", State.EXITED, age=timedelta(minutes=5))}
    verdict = judge(planted, present, killed={"p": 1}, removed={}, now=NOW, budgets=B)
    assert len(verdict.problems) == 2
    assert "protected:      alive 0/1" in verdict.lines


def test_stopped_and_created_containers_left_past_grace_fail() -> None:
    planted = [Planted("b", "b", Kind.BURST), Planted("c", "c", Kind.CREATED)]
    present = {
        "b": container("b", State.EXITED, age=timedelta(seconds=26)),  # 10 + 5 + 10 < 26
        "c": container("c", State.CREATED, age=timedelta(seconds=29)),  # 15 + 5 + 10 > 29
    }
    verdict = judge(planted, present, killed={}, removed={}, now=NOW, budgets=B)
    assert verdict.problems == ("b not removed: exited for 26s",)


def test_service_log_keeps_each_action_once_and_waits_for_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "service.log"
    done = {
        "event": "action_done",
        "action": "kill",
        "container_id": "c1",
        "name": "demo-ghost-0001",
        "reason": "over_runtime_budget",
        "timestamp": "2026-01-01T12:00:00.5Z",
    }
    path.write_text(
        "janitor: plain text from the service\n"
        + json.dumps(done)
        + "\n"
        + json.dumps({"event": "sweep_finished"})
        + "\n"
        + json.dumps(done)
        + "\n"
        + '{"event": "action_do'
    )
    log = ServiceLog(path)
    fresh = log.poll()
    assert [e.container_id for e in fresh] == ["c1"]
    assert fresh[0].at == datetime(2026, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)
    assert log.sweeps == 1
    with path.open("a") as f:
        f.write(
            'ne", "action": "remove", "container_id": "c2", "timestamp": "2026-01-01T12:00:01Z"}\n'
        )
    assert [e.container_id for e in log.poll()] == ["c2"]
    assert set(log.removed) == {"c2"}


def test_missing_packages_names_what_the_sandbox_lacks() -> None:
    def nothing(binary: str) -> str | None:
        del binary
        return None

    assert prerequisites.missing_packages(nothing, lambda: False) == [
        "docker.io",
        "redis-server",
        "busybox-static",
    ]
    assert prerequisites.missing_packages(lambda b: f"/usr/bin/{b}", lambda: True) == []


def test_a_dynamic_busybox_is_not_enough(tmp_path: Path) -> None:
    # An ELF64 header whose one program header is PT_INTERP: a dynamically linked binary.
    header = bytearray(64 + 56)
    header[:4] = b"\x7fELF"
    struct.pack_into("<Q", header, 32, 64)
    struct.pack_into("<HH", header, 54, 56, 1)
    struct.pack_into("<I", header, 64, 3)
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(bytes(header))
    assert not prerequisites.is_static_busybox(dynamic)
    assert not prerequisites.is_static_busybox(tmp_path / "absent")


def test_the_missing_packages_error_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites, "missing_packages", lambda: ["docker.io", "busybox-static"])
    with pytest.raises(
        prerequisites.MissingPackagesError,
        match=r"scripts/bootstrap\.sh \(or apt-get install docker\.io busybox-static\)",
    ):
        prerequisites.check_sandbox_packages()
