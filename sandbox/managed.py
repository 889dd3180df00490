"""The shapes the wing's servers share: `Managed` gives `with` to throwaway ones (started on
entry, cleaned up on exit, also when the start fails halfway), `Borrowed` refuses to start or
stop a developer's own, and `Lifecycle` is what tests may ask of either."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self


class Managed:
    """A base for what `start`s and must be `cleanup`ed whatever happens."""

    def start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class Lifecycle(Protocol):
    """What the wing's servers, private or borrowed, answer to."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def restart(self) -> None: ...

    def cleanup(self) -> None: ...


class Borrowed:
    """A server the developer runs and lends us: used, never started, stopped or restarted.

    Subclasses name what a test needs instead (`private`) and how to get it (`how`).
    """

    private = "server"
    how = ""

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        raise self._needs_private("start")

    def stop(self) -> None:
        raise self._needs_private("stop")

    def restart(self) -> None:
        raise self._needs_private("restart")

    def _needs_private(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"cannot {what} {self.url}: this test needs a private {self.private} ({self.how})"
        )
