"""Project holders for spawning services: the labels and run arguments of one project's
namespace holder and of the members that share its namespaces, right in a few lines.

    project = ProjectHolder("session-42", labels={"janitor.managed": "true"})
    pause = client.containers.run("pause-image", detach=True, **project.holder_run_kwargs())
    client.containers.run("ide-terminal", detach=True, **project.member_run_kwargs(pause.id))

The holder carries `janitor.holder=true`: it has no runtime budget and is killed once no
member has run for JANITOR_HOLDER_GRACE. Members join it by full id, which never changes (a
name can be renamed away, and then the janitor, unable to tell which container a member
needs, holds every container on the host). Plain data: no Docker SDK here, so the same
arguments serve any client; `member_cli_args` gives them for `docker run`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from janitor.vocabulary import HOLDER_LABEL

# The namespaces members share with the holder, by their `docker run` flag name.
SHAREABLE = ("network", "ipc", "pid")
_FULL_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ProjectHolder:
    """One project: a holder and its members, sharing the namespaces in `share`."""

    project: str
    labels: Mapping[str, str] = field(default_factory=dict)
    share: tuple[str, ...] = ("network", "ipc")

    def __post_init__(self) -> None:
        unknown = set(self.share) - set(SHAREABLE)
        if unknown:
            raise ValueError(f"cannot share {sorted(unknown)}: choose from {SHAREABLE}")

    @property
    def holder_name(self) -> str:
        return f"{self.project}-holder"

    @property
    def holder_labels(self) -> dict[str, str]:
        return {**self.labels, HOLDER_LABEL: "true"}

    @property
    def member_labels(self) -> dict[str, str]:
        return dict(self.labels)

    def holder_run_kwargs(self) -> dict[str, object]:
        """Keyword arguments for the SDK's `containers.run` or `containers.create`."""
        kwargs: dict[str, object] = {"name": self.holder_name, "labels": self.holder_labels}
        if "ipc" in self.share:
            # IPC is private by default: a holder must offer it to be joined.
            kwargs["ipc_mode"] = "shareable"
        return kwargs

    def member_run_kwargs(self, holder_id: str) -> dict[str, object]:
        joined = f"container:{_full_id(holder_id)}"
        kwargs: dict[str, object] = {"labels": self.member_labels}
        kwargs.update({f"{flag}_mode": joined for flag in self.share})
        return kwargs

    def member_cli_args(self, holder_id: str) -> list[str]:
        """The same for `docker run`: `--label k=v ... --network container:<id> ...`."""
        args = [arg for key, value in self.labels.items() for arg in ("--label", f"{key}={value}")]
        joined = f"container:{_full_id(holder_id)}"
        return args + [arg for flag in self.share for arg in (f"--{flag}", joined)]


def _full_id(holder_id: str) -> str:
    if not _FULL_ID.fullmatch(holder_id):
        raise ValueError(f"{holder_id!r} is not a full container id (64 hex digits)")
    return holder_id
