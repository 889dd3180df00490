"""The text forms of configuration values: host lists, selectors, Redis URLs.

Pure parsing, no environment: `settings` reads the variables and hands their text here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, PlainSerializer

from janitor.model import DiskBudget, HostConfig, Selector
from janitor.vocabulary import SIZE_FORMS, format_duration, parse_duration, parse_size


def _duration_input(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_duration(str(value))
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration_input),
    PlainSerializer(format_duration, return_type=str),
]


HOST_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
SELECTOR_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
# urlsplit lowercases the hostname and strips IPv6 brackets; this refuses spaces and controls.
TCP_HOSTNAME = re.compile(r"[a-z0-9_][a-z0-9_.-]*")


def parse_hosts(text: str) -> tuple[HostConfig, ...]:
    """Parse `name=url,name=url`; names unique, urls unix:///abs/path or tcp://host:port."""
    hosts: list[HostConfig] = []
    entries = [entry.strip() for entry in text.split(",")]
    if not any(entries):
        raise ValueError(
            "no host given: use name=unix:///path or name=tcp://host:port, comma-separated"
        )
    for entry in entries:
        if not entry:
            raise ValueError("empty entry between commas")
        name, sep, url = entry.partition("=")
        name, url = name.strip(), url.strip()
        if not sep:
            raise ValueError(f"entry {entry!r} is not name=url")
        if not HOST_NAME.fullmatch(name):
            raise ValueError(f"host name {name!r} must match [a-z0-9][a-z0-9-]*")
        if any(host.name == name for host in hosts):
            raise ValueError(f"host name {name!r} is used twice")
        hosts.append(HostConfig(name=name, url=_check_docker_url(url)))
    return tuple(hosts)


def _check_docker_url(url: str) -> str:
    if url.startswith("unix://"):
        path = url.removeprefix("unix://")
        if not path.startswith("/") or path == "/":
            raise ValueError(f"{url!r} must be unix:///absolute/path")
        return url
    if url.startswith("tcp://"):
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r} must be tcp://host:port") from None
        if (
            port is None
            or not 0 < port <= 65535
            or not _is_tcp_hostname(parts.hostname or "")
            or "@" in parts.netloc
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
        ):
            raise ValueError(f"{url!r} must be tcp://host:port")
        return f"tcp://{parts.netloc}"
    raise ValueError(f"{url!r} must start with unix:// or tcp://")


def _is_tcp_hostname(hostname: str) -> bool:
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return TCP_HOSTNAME.fullmatch(hostname) is not None
    return True


def parse_selector(value: object) -> object:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text == "*":
        return Selector(key=None)
    key, sep, label_value = text.partition("=")
    if not SELECTOR_KEY.fullmatch(key) or "," in text or (sep and not label_value):
        raise ValueError("must be a label key, key=value, or * for every container")
    return Selector(key=key, value=label_value if sep else None)


_USERINFO_PASSWORD = re.compile(r"^(?P<head>[^:/?#@]*://[^:/?#@]*:).*@(?P<tail>[^@]*)$", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs, reports and error messages.

    Text, not urlsplit: a password holding '/', '?', '#' or '@' (unencoded, as operators
    paste them) ends urlsplit's netloc early, and a bad port makes it raise.
    """
    # Userinfo first: its greedy match swallows a '?password=' typed inside the password.
    url = _USERINFO_PASSWORD.sub(r"\g<head>***@\g<tail>", url)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """`sentinel://[:password@]HOST:PORT[,HOST:PORT...]/DB`: where to ask for the master."""

    sentinels: tuple[tuple[str, int], ...]
    db: int
    password: str | None = None


SENTINEL_FORMS = "must be sentinel://[:password@]host:port[,host:port...]/db"
_SENTINEL = re.compile(r"sentinel://(?:(?P<auth>[^@]*)@)?(?P<hosts>[^/@]+)(?:/(?P<db>\d*))?")
_SENTINEL_HOST = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")


def is_sentinel_url(url: str) -> bool:
    return url.startswith("sentinel://")


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, database and password of a sentinel:// URL; ValueError naming the form,
    never quoting the URL (it may hold a password)."""
    match = _SENTINEL.fullmatch(url)
    if match is None:
        raise ValueError(SENTINEL_FORMS)
    sentinels = []
    for entry in match["hosts"].split(","):
        host = _SENTINEL_HOST.fullmatch(entry.strip())
        if host is None or not 0 < int(host["port"]) <= 65535:
            raise ValueError(SENTINEL_FORMS)
        sentinels.append((host["host"].strip("[]"), int(host["port"])))
    password = None
    if match["auth"] is not None:
        _, _, password = unquote(match["auth"]).partition(":")
    return SentinelURL(tuple(sentinels), int(match["db"] or 0), password or None)


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def parse_disk_budget(value: object) -> object:
    """`500MiB`, `50GB` or `80%`; an empty value is no budget."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    if text.endswith("%"):
        try:
            share = float(text[:-1]) / 100
        except ValueError:
            raise ValueError(f"not a size: use {SIZE_FORMS}") from None
        if not 0 < share <= 1:
            raise ValueError("a percentage must be above 0% and at most 100%")
        return DiskBudget(share=share)
    size = parse_size(text)
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return DiskBudget(size=size)


def check_pruning(
    interval: timedelta,
    budget: DiskBudget | None,
    docker_root: Path | None,
    tcp_hosts: list[str],
) -> None:
    """The prune's settings together: a share of a filesystem needs that filesystem seen."""
    if timedelta(0) < interval < timedelta(seconds=1):
        raise ValueError("JANITOR_PRUNE_INTERVAL must be 0 (off) or at least 1s")
    if docker_root is not None and not docker_root.is_dir():
        raise ValueError(f"JANITOR_DOCKER_ROOT={str(docker_root)!r}: no directory there")
    if budget is not None and budget.share is not None and docker_root is None and tcp_hosts:
        raise ValueError(
            f"JANITOR_IMAGE_DISK_BUDGET={budget} is a share of the Docker root filesystem, "
            f"which this worker cannot see for tcp host(s) {', '.join(tcp_hosts)}: set "
            "JANITOR_DOCKER_ROOT to where it is mounted here, or give a size (500MiB, 50GB)"
        )
