"""The janitor's words, one home each: durations and the labels it reads.

Pure: imports nothing of ours, so the policy, the settings and the Docker adapter can all
speak it without importing each other.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from enum import StrEnum

PROTECT_LABEL = "janitor.protect"
MAX_RUNTIME_LABEL = "janitor.max-runtime"
STOPPED_GRACE_LABEL = "janitor.stopped-grace"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
LEASE_LABEL = "janitor.lease"
GROUP_LABEL = "janitor.group"
# A project's namespace holder ("pause" container): no runtime budget, reaped once orphaned.
HOLDER_LABEL = "janitor.holder"

DURATION_LABELS = (MAX_RUNTIME_LABEL, STOPPED_GRACE_LABEL)


class Detail(StrEnum):
    """Why an action was not done: the closed list of a report action's `detail` codes.

    A `gone`, `failed` or daemon-refused (409) action carries the daemon's own error text
    instead; `done` and `planned` carry none, but for a caveat (RESTART_POLICY_KEPT).
    """

    BAD_LABEL = "bad_label"
    OVER_MAX_ACTIONS = "over_max_actions"
    DEADLINE_REACHED = "deadline_reached"
    LEASE_LOST = "lease_lost"
    SWEEP_STOPPED = "sweep_stopped"
    # A spawn spike began while the removal sweep acted: the rest waits for the gap.
    YIELDED_TO_SPIKE = "yielded_to_spike"
    RESTARTED_SINCE_DECISION = "restarted_since_decision"
    RAN_SINCE_DECISION = "ran_since_decision"
    NO_LONGER_ELIGIBLE = "no_longer_eligible"
    IN_USE_SINCE_DECISION = "in_use_since_decision"
    HOLDER_IN_USE = "holder_in_use"
    # A kill that was done on an engine that cannot clear a restart policy (Podman < 5.1).
    RESTART_POLICY_KEPT = "restart_policy_kept"
    # A 404 from an action, while a fresh inspect still finds the container: never `gone`.
    STILL_THERE_AFTER_404 = "still_there_after_404"


SIZE_FORMS = "a size such as 500MiB, 50GB, 2TiB or plain bytes, or a percentage such as 80%"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `500MiB`, `50GB`, `10g` or plain bytes; ValueError names the forms."""
    match = _SIZE.match(text.strip()) if text.strip().isascii() else None
    if match is None:
        raise ValueError(f"not a size: use {SIZE_FORMS}")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit else 0
    return int(number * base**power)


DURATION_FORMS = "90s, 30m, 2h, 7d, 1h30m, plain seconds (300) or ISO 8601 (PT2H, P1DT2H)"
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NUMBER = r"\d+(?:\.\d+)?"
_PLAIN = re.compile(rf"^{_NUMBER}$")
_COMPACT_PART = re.compile(rf"({_NUMBER})([smhdw])")
_COMPACT = re.compile(rf"^(?:{_NUMBER}[smhdw])+$")
_ISO = re.compile(
    rf"^P(?:(?P<w>{_NUMBER})W)?(?:(?P<d>{_NUMBER})D)?"
    rf"(?:T(?:(?P<h>{_NUMBER})H)?(?:(?P<m>{_NUMBER})M)?(?:(?P<s>{_NUMBER})S)?)?$"
)
# Far beyond any sensible budget, and small enough that datetime arithmetic cannot overflow.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """Parse the duration forms the contract accepts; ValueError names those forms."""
    raw = text.strip()
    # ASCII only: \d and str.upper() reach further ("\u0661\u0662" read as 12s, "PT5\u017f" as 5s).
    seconds = _seconds(raw) if raw.isascii() else None
    if seconds is None or not math.isfinite(seconds):
        raise ValueError(f"not a duration: use {DURATION_FORMS}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"longer than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def _seconds(raw: str) -> float | None:
    if _PLAIN.match(raw):
        return float(raw)
    if _COMPACT.match(raw.lower()):
        parts = _COMPACT_PART.findall(raw.lower())
        return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if (iso := _ISO.match(raw.upper())) and _names_a_unit(iso, raw.upper()):
        # The ISO groups are named after our units ("m" is minutes in the time part).
        iso_parts = {unit: float(n) for unit, n in iso.groupdict().items() if n is not None}
        return sum(number * _UNIT_SECONDS[unit] for unit, number in iso_parts.items())
    return None


def _names_a_unit(iso: re.Match[str], text: str) -> bool:
    # Every ISO part is optional in the pattern; "P", "PT" and "P1DT" are not durations.
    parts = iso.groupdict()
    has_time_part = any(parts[key] is not None for key in "hms")
    return any(v is not None for v in parts.values()) and ("T" not in text or has_time_part)


def milliseconds(duration: timedelta) -> int:
    """A Redis expiry (PX, PEXPIRE) for the duration: whole milliseconds, never 0, which
    Redis refuses."""
    return max(1, int(duration.total_seconds() * 1000))


def format_duration(duration: timedelta) -> str:
    """The shortest compact form that parse_duration reads back to the same value."""
    # Integer microseconds: "%g" of float seconds gave "1.23457e+06s", which reads back wrong.
    micros = duration // timedelta(microseconds=1)
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit] * 1_000_000
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    sign, micros = ("-", -micros) if micros < 0 else ("", micros)
    whole, fraction = divmod(micros, 1_000_000)
    if fraction == 0:
        return f"{sign}{whole}s"
    return f"{sign}{whole}.{fraction:06d}".rstrip("0") + "s"
