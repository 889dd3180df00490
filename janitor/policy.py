"""Pure decisions: which containers a sweep kills or removes, and why. No I/O, no clock."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from janitor.model import Action, Container, Reason, Rules, State, Summary, Task, Verb

PROTECT_LABEL = "janitor.protect"
MAX_RUNTIME_LABEL = "janitor.max-runtime"
STOPPED_GRACE_LABEL = "janitor.stopped-grace"
COMPOSE_PROJECT_LABEL = "com.docker.compose.project"

STOPPED_STATES = frozenset({State.EXITED, State.DEAD})
DURATION_LABELS = (MAX_RUNTIME_LABEL, STOPPED_GRACE_LABEL)
_EXPLICIT_NO = frozenset({"false", "0", "no", "off"})

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


def is_protected(labels: Mapping[str, str]) -> bool:
    """Whether the protection label is set to anything but an explicit no.

    Fail-safe: `janitor.protect=yes` or a typo protects; only false/0/no/off do not.
    """
    if PROTECT_LABEL not in labels:
        return False
    return labels[PROTECT_LABEL].strip().lower() not in _EXPLICIT_NO


def is_in_scope(container: Summary | Container, rules: Rules) -> bool:
    """Managed by the selector, and neither protected nor one of the janitor's own."""
    labels = container.labels
    return (
        rules.selector.matches(labels)
        and not is_protected(labels)
        and container.id not in rules.own_container_ids
        and labels.get(COMPOSE_PROJECT_LABEL) not in rules.own_compose_projects
    )


def _label_duration(labels: Mapping[str, str], key: str, default: timedelta) -> timedelta | None:
    """The label's duration, the default when absent, None when unparseable."""
    if key not in labels:
        return default
    try:
        return parse_duration(labels[key])
    except ValueError:
        return None


def _budget(container: Summary | Container, task: Task, rules: Rules) -> timedelta | None:
    """The container's budget for this task; None when any duration label is unparseable,
    which makes the container ineligible for every task, not only the one the label is for."""
    labels = container.labels
    if any(_label_duration(labels, key, timedelta(0)) is None for key in DURATION_LABELS):
        return None
    if task is Task.KILL_GHOSTS:
        return _label_duration(labels, MAX_RUNTIME_LABEL, rules.max_runtime)
    if container.state == State.CREATED:
        return rules.created_grace
    return _label_duration(labels, STOPPED_GRACE_LABEL, rules.stopped_grace)


def _states_for(task: Task) -> frozenset[str]:
    if task is Task.KILL_GHOSTS:
        return frozenset({State.RUNNING})
    return STOPPED_STATES | {State.CREATED}


def could_be_eligible(summary: Summary, task: Task, rules: Rules, now: datetime) -> bool:
    """Whether a listed container is worth inspecting for this task.

    Every age the policy measures (from start, finish or creation) is no older than the
    creation time the list call gives, so a container created within its budget cannot be
    eligible yet; skipping it keeps an idle sweep at one list call.
    """
    if summary.state not in _states_for(task) or not is_in_scope(summary, rules):
        return False
    budget = _budget(summary, task, rules)
    return budget is None or now - summary.created_at > budget


def decide(container: Container, task: Task, rules: Rules, now: datetime) -> Action | None:
    """The action this task takes on one inspected container, or None to leave it alone."""
    if container.state not in _states_for(task) or not is_in_scope(container, rules):
        return None
    if task is Task.REMOVE_STOPPED and container.auto_remove:
        return None  # the daemon removes it itself once it stops
    budget = _budget(container, task, rules)
    if task is Task.KILL_GHOSTS:
        verb, reason, since = Verb.KILL, Reason.OVER_RUNTIME_BUDGET, container.started_at
    elif container.state == State.CREATED:
        # A created container that was started once and reset is not "never started".
        if container.started_at is not None:
            return None
        verb, reason, since = Verb.REMOVE, Reason.CREATED_NEVER_STARTED, container.created_at
    else:
        verb, reason, since = Verb.REMOVE, Reason.EXITED_PAST_GRACE, container.finished_at
    if budget is None:
        reason = Reason.BAD_LABEL
    elif since is None or now - since <= budget:
        return None
    return Action(
        container_id=container.id,
        name=container.name,
        verb=verb,
        reason=reason,
        seen_started_at=container.started_at,
        seen_finished_at=container.finished_at,
    )


def select(
    containers: Iterable[Container], task: Task, rules: Rules, now: datetime
) -> list[Action]:
    """Every action of one sweep, bad labels included (reported, never acted on)."""
    return [
        action
        for container in containers
        if (action := decide(container, task, rules, now)) is not None
    ]


def select_ghosts(containers: Iterable[Container], rules: Rules, now: datetime) -> list[Action]:
    return select(containers, Task.KILL_GHOSTS, rules, now)


def select_stopped(containers: Iterable[Container], rules: Rules, now: datetime) -> list[Action]:
    return select(containers, Task.REMOVE_STOPPED, rules, now)


def still_warranted(
    action: Action, current: Container, task: Task, rules: Rules, now: datetime
) -> str | None:
    """Why the action must not go ahead on the container as it is now, or None if it may.

    The decision is taken again on a fresh inspect: a container restarted, started,
    stopped, relabelled or protected since is left alone.
    """
    if current.started_at != action.seen_started_at:
        return "restarted_since_decision"
    if current.finished_at != action.seen_finished_at:
        return "ran_since_decision"
    fresh = decide(current, task, rules, now)
    # A bad_label action is reported, never carried out, whoever asks.
    if fresh is None or not fresh.actionable:
        return "no_longer_eligible"
    if fresh.verb is not action.verb or fresh.reason is not action.reason:
        return "no_longer_eligible"
    return None
