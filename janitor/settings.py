"""The only reader of the environment: one frozen Settings built from JANITOR_* variables."""

from __future__ import annotations

import functools
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import NoDecode, SettingsConfigDict

from janitor.config_syntax import (
    Duration,
    is_loopback,
    is_sentinel_url,
    parse_hosts,
    parse_selector,
    parse_sentinel_url,
    redact_url,
)
from janitor.errors import ConfigError
from janitor.model import HostConfig, Rules, Selector, TLSConfig
from janitor.settings_prune import PRUNE_ON_REQUEST_INTERVAL, PruneSettings
from janitor.vocabulary import format_duration

ENV_PREFIX = "JANITOR_"

REDIS_FORMS = (
    "must be redis://[:password@]host:port/db, rediss://..., unix:///path or "
    "sentinel://[:password@]host:port[,host:port...]/db (with JANITOR_REDIS_MASTER)"
)
BOOL_FORMS = "true/false, 1/0, yes/no or on/off"


class Settings(PruneSettings):
    """Every JANITOR_* variable of the contract, validated once at start."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    hosts: Annotated[tuple[HostConfig, ...], NoDecode] = Field(
        default=(HostConfig("local", "unix:///var/run/docker.sock"),),
        description="comma-separated `name=url`; url is `unix:///path` or `tcp://host:port`",
    )
    tls_ca_cert: Path | None = Field(None, description="CA that signed the tcp hosts' certificates")
    tls_client_cert: Path | None = Field(None, description="client certificate for tcp hosts")
    tls_client_key: Path | None = Field(None, description="client key for tcp hosts")
    allow_insecure_tcp: bool = Field(
        default=False, description="allow `tcp://` without TLS, for loopback hosts only"
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Celery broker, result backend and locks; `sentinel://host:port[,...]/db` "
        "asks Redis Sentinels for the master named by JANITOR_REDIS_MASTER",
    )
    redis_master: str = Field(
        "", description="the master's name in Sentinel; required with a `sentinel://` URL"
    )
    result_ttl: Duration = Field(
        timedelta(days=1),
        description="how long Redis keeps each task's result, and each host's last report",
    )
    selector: Annotated[Selector, NoDecode] = Field(
        default=Selector("janitor.managed", "true"),
        description="containers under management: label `key` or `key=value`; `*` for all",
    )
    max_runtime: Duration = Field(
        timedelta(hours=2), description="runtime budget of a running container"
    )
    stopped_grace: Duration = Field(
        timedelta(minutes=10), description="how long an exited or dead container is kept"
    )
    created_grace: Duration = Field(
        timedelta(hours=1), description="how long a created, never-started container is kept"
    )
    kill_interval: Duration = Field(
        timedelta(seconds=60), description="beat interval of the ghost task"
    )
    remove_interval: Duration = Field(
        timedelta(minutes=5), description="beat interval of the stopped task"
    )
    stop_timeout: Duration = Field(
        timedelta(seconds=5), description="grace between SIGTERM and SIGKILL; `0s` kills at once"
    )
    remove_volumes: bool = Field(
        default=True, description="also remove the container's anonymous volumes"
    )
    concurrency: int = Field(8, ge=1, le=64, description="Docker actions in flight per host")
    max_actions: int = Field(
        1000, ge=1, description="a sweep that would act on more containers acts on none"
    )
    dry_run: bool = Field(default=False, description="decide and report, change nothing")
    docker_timeout: Duration = Field(
        timedelta(seconds=10), description="timeout of each Docker API call"
    )
    log_format: Literal["json", "console"] = Field("json", description="`json` or `console`")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus port of the worker; 0 turns it off"
    )
    lease_grace: Duration = Field(
        timedelta(seconds=60),
        description="how long a `janitor.lease` container may run before a missing lease "
        "counts as expired",
    )
    holder_grace: Duration = Field(
        timedelta(seconds=60),
        description="how long a `janitor.holder=true` container may have no running dependent "
        "before it is killed",
    )
    keep_last: int = Field(
        0, ge=0, description="stopped containers kept per `janitor.group` for debugging; 0: none"
    )
    max_stopped: int = Field(
        0, ge=0, description="cap on a host's stopped containers, oldest removed first; 0: none"
    )
    spike_rate: int = Field(
        0,
        ge=0,
        description="container starts per minute above which a spawn spike is on (over 3 s): "
        "the stopped sweep is deferred and a sweep in flight yields; 0 turns pacing off",
    )
    max_defer: Duration = Field(
        timedelta(minutes=10), description="longest deferral of a stopped sweep by a spike"
    )
    pressure_high: float = Field(
        0.8,
        ge=0,
        le=1,
        description="memory or CPU share in use that triggers a stopped sweep now; 0 turns "
        "pressure response off",
    )
    pressure_low: float = Field(
        0.7, ge=0, le=1, description="share under which the host counts as relieved"
    )
    pressure_grace_floor: Duration = Field(
        timedelta(0),
        description="under pressure, JANITOR_STOPPED_GRACE and JANITOR_CREATED_GRACE shrink "
        "to this; 0s keeps them",
    )
    proc_root: Path = Field(
        Path("/proc"), description="where pressure is read for unix-socket hosts"
    )

    @field_validator("hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        return parse_hosts(value) if isinstance(value, str) else value

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: object) -> object:
        return parse_selector(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        # urlsplit's own messages may quote part of the password; never pass them on.
        if is_sentinel_url(value):
            try:
                parse_sentinel_url(value)
            except ValueError:
                raise ValueError(REDIS_FORMS) from None
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(REDIS_FORMS) from None
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(REDIS_FORMS)
        elif (
            parts.scheme not in ("redis", "rediss")
            or not parts.hostname
            or not re.fullmatch(r"(/\d*)?", parts.path)
        ):
            # A path other than /db is most often a password with an unencoded '/'.
            raise ValueError(REDIS_FORMS)
        return value

    @field_validator("result_ttl")
    @classmethod
    def _at_least_a_minute(cls, value: timedelta) -> timedelta:
        if value < timedelta(minutes=1):
            raise ValueError("must be at least 1m")
        return value

    @field_validator("kill_interval", "remove_interval", "docker_timeout")
    @classmethod
    def _at_least_a_second(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("must be at least 1s")
        return value

    @field_validator("max_runtime", "stopped_grace", "created_grace", "unused_grace")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        self._check_tls()
        if is_sentinel_url(self.redis_url) and not self.redis_master:
            raise ValueError(
                "JANITOR_REDIS_URL names Sentinels: set JANITOR_REDIS_MASTER to the master's name"
            )
        if self.pressure_high and self.pressure_low >= self.pressure_high:
            raise ValueError(
                f"JANITOR_PRESSURE_LOW={self.pressure_low} must be below "
                f"JANITOR_PRESSURE_HIGH={self.pressure_high}"
            )
        self._check_pruning([h.name for h in self.hosts if h.is_tcp])
        intervals = [
            (self.kill_interval, "kill_interval", self.docker_timeout + self.stop_timeout),
            (self.remove_interval, "remove_interval", self.docker_timeout),
        ]
        if self.prunes:
            intervals.append((self.prune_interval, "prune_interval", self.docker_timeout))
        for task_interval, name, worst_call in intervals:
            if worst_call >= soft_limit(task_interval):
                raise ValueError(
                    f"{_var(name)}={format_duration(task_interval)} leaves a soft time limit "
                    f"of {format_duration(soft_limit(task_interval))}, not above the slowest "
                    f"Docker call ({format_duration(worst_call)}, from JANITOR_DOCKER_TIMEOUT"
                    + (" + JANITOR_STOP_TIMEOUT" if name == "kill_interval" else "")
                    + "): lengthen the interval or shorten the timeouts"
                )
        return self

    def _check_tls(self) -> None:
        given = {
            "tls_ca_cert": self.tls_ca_cert,
            "tls_client_cert": self.tls_client_cert,
            "tls_client_key": self.tls_client_key,
        }
        for name, path in given.items():
            # An empty variable reads as Path("."), a directory that os.access calls readable.
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
                raise ValueError(f"{_var(name)}={str(path)!r}: no readable file there")
        if (self.tls_client_cert is None) != (self.tls_client_key is None):
            raise ValueError(
                "JANITOR_TLS_CLIENT_CERT and JANITOR_TLS_CLIENT_KEY must be set together"
            )
        if self.tls_ca_cert is None and self.tls_client_cert is not None:
            raise ValueError("JANITOR_TLS_CA_CERT is required with a client certificate")
        for host in self.hosts:
            if not host.is_tcp or self.tls_ca_cert is not None:
                continue
            hostname = urlsplit(host.url).hostname or ""
            if not (self.allow_insecure_tcp and is_loopback(hostname)):
                raise ValueError(
                    f"JANITOR_HOSTS: {host.name}={host.url} is tcp without TLS: set "
                    "JANITOR_TLS_CA_CERT (and a client cert and key), or, for a loopback "
                    "host only, JANITOR_ALLOW_INSECURE_TCP=true"
                )

    @property
    def tls(self) -> TLSConfig | None:
        if self.tls_ca_cert is None:
            return None
        return TLSConfig(self.tls_ca_cert, self.tls_client_cert, self.tls_client_key)

    def host(self, name: str) -> HostConfig:
        """The named host, with TLS attached when it is a tcp host; UnknownHostError if absent."""
        from janitor.errors import UnknownHostError

        for host in self.hosts:
            if host.name == name:
                if host.is_tcp and self.tls is not None:
                    return HostConfig(host.name, host.url, self.tls)
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise UnknownHostError(f"unknown host {name!r}: JANITOR_HOSTS configures {known}")

    def rules(
        self,
        own_container_ids: frozenset[str] = frozenset(),
        own_compose_projects: frozenset[str] = frozenset(),
    ) -> Rules:
        return Rules(
            selector=self.selector,
            max_runtime=self.max_runtime,
            stopped_grace=self.stopped_grace,
            created_grace=self.created_grace,
            own_container_ids=own_container_ids,
            own_compose_projects=own_compose_projects,
            lease_grace=self.lease_grace,
            holder_grace=self.holder_grace,
            keep_last=self.keep_last,
            max_stopped=self.max_stopped,
        )

    def interval(self, task_name: str) -> timedelta:
        """The task's beat interval; a prune that is off but run on request gets an hour."""
        if task_name == "prune-unused":
            return self.prune_interval or PRUNE_ON_REQUEST_INTERVAL
        return self.kill_interval if task_name == "kill-ghosts" else self.remove_interval

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)


def soft_limit(interval: timedelta) -> timedelta:
    """Soft time limit of a sweep: it stops starting actions, then reports."""
    return interval * 0.8


def hard_limit(interval: timedelta) -> timedelta:
    """Hard time limit: the worker kills the sweep's process. Below the lease TTL."""
    return interval * 0.9


def _var(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def _shown(field_name: str, value: Any) -> str:
    if field_name == "redis_url" and isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


@functools.cache
def cached_settings() -> Settings:
    """The process's settings, read once: for the Celery side, which has no `main` to pass them."""
    return load_settings()


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment; ConfigError, one line naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "bool_parsing":
            message = f"{message}: use {BOOL_FORMS}"
        location = [str(part) for part in error["loc"]]
        if not location:
            # Cross-variable checks name their variables themselves.
            lines.append(message)
            continue
        name = location[0]
        value = os.environ.get(_var(name), error.get("input"))
        lines.append(f"{_var(name)}={_shown(name, value)} is invalid: {message}")
    # One line, whatever the number of bad variables: entry points print it as is.
    return "; ".join(lines)
