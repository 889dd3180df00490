"""Child processes of ours, start to stop: `janitor run` supervises its Redis, worker and
Flower with this, and the development wing its throwaway daemons and Celery processes.

A child starts with its output in a log file (or ours), is waited for with a readiness probe
that notices an early exit, is stopped with SIGTERM then SIGKILL, and never outlives us: live
children are in a registry cleaned up at interpreter exit, which SIGTERM reaches too once
`interrupt_on_signals` made it unwind like Ctrl-C. Also here: `free_port`, the JSON-log reader.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class ChildError(RuntimeError):
    """A child exited while we waited for it; says how, with the end of its log."""


def free_port() -> int:
    """A loopback TCP port nothing listens on now (free when asked: fine for our own children)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def json_lines(lines: Iterable[str | bytes], event: str | None = None) -> list[dict[str, Any]]:
    """The JSON objects among log lines, in order, those named `event` if given; banners,
    plain-text lines and a half-written last line are skipped."""
    found = []
    for line in lines:
        text = line.decode(errors="replace") if isinstance(line, bytes) else line
        with contextlib.suppress(ValueError):
            parsed = json.loads(text) if text.startswith("{") else None
            if isinstance(parsed, dict) and (event is None or parsed.get("event") == event):
                found.append(parsed)
    return found


def read_json_log(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """`json_lines` of a log file; nothing while the file does not exist yet."""
    try:
        with path.open(encoding="utf-8", errors="replace") as log:
            return json_lines(log, event)
    except FileNotFoundError:
        return []


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None:
        return "(its output went to ours, above)"
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Child:
    """One child process: `start`, `wait_ready`, `stop` (or `kill`), any number of times.

    With `own_session` (the default) it runs in a session of its own: a terminal's Ctrl-C
    reaches us alone, so we decide when and in which order children stop, and a forced stop
    takes its whole process group (a Celery pool, an embedded beat) along.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = True,
    ) -> None:
        """Without `log_path` the child writes to our stdout and stderr."""
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.own_session = own_session
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaped = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (negative: the signal that ended it), else None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.is_running:
            raise ChildError(f"{self.name} is already running")
        with contextlib.ExitStack() as files:
            output = None
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                output = files.enter_context(self.log_path.open("ab"))
            self._proc = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if output is not None else None,
                start_new_session=self.own_session,
            )
        self._reaped = False
        at_exit(self, self.stop)

    def wait_ready(self, ready: Callable[[], object], timeout: float, what: str = "ready") -> None:
        """`wait_for(ready)`, failing with the end of the child's log as soon as it exits."""
        wait_for(
            ready,
            timeout=timeout,
            what=f"{self.name} to be {what}",
            alive=self.check_alive,
            details=lambda: f"end of its log:\n{log_tail(self.log_path)}",
        )

    def check_alive(self) -> None:
        """ChildError, with the end of its log, if the child has exited."""
        code = self.returncode
        if code is not None:
            raise ChildError(
                f"{self.name} exited with {code}; end of its log:\n{log_tail(self.log_path)}"
            )

    def send_signal(self, signum: int) -> None:
        if self._proc is not None and self.is_running:
            self._proc.send_signal(signum)

    def terminate(self) -> None:
        """SIGTERM (Celery's warm shutdown, a service manager's stop) without waiting."""
        self.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; its exit code (None if never started)."""
        return self._end(timeout)

    def kill(self) -> int | None:
        """SIGKILL at once: a crash, nothing flushed."""
        return self._end(None)

    def _end(self, grace: float | None) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if not self._reaped:
            if grace is not None:
                self.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
            if proc.poll() is None:
                self._kill_all(proc)
            proc.wait()
            # Children that outlived the leader keep its group id: now, once, before that id
            # can be anyone else's.
            if self.own_session:
                self._kill_all(proc)
            self._reaped = True
            forget(self)
        return proc.returncode

    def _kill_all(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.own_session:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    alive: Callable[[], None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy, which is returned; TimeoutError at
    the deadline with `what` (and `details()`), or whatever `alive()` raises, at once."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


_cleanups: dict[int, Callable[[], object]] = {}
_owner_pid = os.getpid()


def at_exit(owner: object, cleanup: Callable[[], object]) -> None:
    """Run `cleanup` at interpreter exit unless `forget(owner)` came first; latest first."""
    _cleanups[id(owner)] = cleanup


def forget(owner: object) -> None:
    _cleanups.pop(id(owner), None)


@atexit.register
def _clean_up_leftovers() -> None:
    # Teardown did not run (an interrupted session); a forked child must not do it twice.
    if os.getpid() != _owner_pid:
        return
    for cleanup in reversed(list(_cleanups.values())):
        with contextlib.suppress(Exception):
            cleanup()
    _cleanups.clear()


def interrupt_on_signals(signals: Sequence[int] = (signal.SIGTERM,)) -> None:
    """Make these signals unwind like Ctrl-C, so `finally` blocks and the exit cleanup run
    (their default action would end the process with children still running)."""
    for signum in signals:
        signal.signal(signum, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")
