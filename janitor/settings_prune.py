"""The unused prune's part of the settings: its variables and how they fit together.

`janitor.settings.Settings` is built on it and is what reads the environment; this part only
declares the fields, so that each module stays short.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from janitor.config_syntax import Duration, check_pruning, parse_disk_budget
from janitor.model import DiskBudget

# The lease and time limits of a prune run on request while JANITOR_PRUNE_INTERVAL is 0.
PRUNE_ON_REQUEST_INTERVAL = timedelta(hours=1)
# Listed after every other variable in the README's configuration table.
PRUNE_FIELDS = (
    "prune_interval",
    "unused_grace",
    "image_disk_budget",
    "image_min_age",
    "docker_root",
)


class PruneSettings(BaseSettings):
    """JANITOR_PRUNE_INTERVAL, JANITOR_UNUSED_GRACE, JANITOR_IMAGE_DISK_BUDGET, ..."""

    prune_interval: Duration = Field(
        timedelta(0), description="beat interval of the unused prune; 0 turns it off"
    )
    unused_grace: Duration = Field(
        timedelta(hours=1), description="how long an image, volume or network is kept unused"
    )
    image_disk_budget: Annotated[DiskBudget | None, NoDecode] = Field(
        None,
        description="the in-scope images' size above which unused ones go, least recently "
        "used first: `500MiB`, `50GB` or `80%` of the Docker root filesystem",
    )
    image_min_age: Duration = Field(
        timedelta(minutes=10), description="how long unused before the disk budget may take one"
    )
    docker_root: Path | None = Field(
        None, description="the Docker root as mounted here; unset: the daemon's DockerRootDir"
    )

    @field_validator("image_disk_budget", mode="before")
    @classmethod
    def _disk_budget(cls, value: object) -> object:
        return parse_disk_budget(value)

    @property
    def prunes(self) -> bool:
        """Whether beat schedules the unused prune (and `--task all` runs it)."""
        return self.prune_interval > timedelta(0)

    def _check_pruning(self, tcp_hosts: list[str]) -> None:
        check_pruning(self.prune_interval, self.image_disk_budget, self.docker_root, tcp_hosts)
