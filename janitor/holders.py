"""Pure decisions about namespace holders: who depends on whom, and which actions that forbids.

A container is a holder when another joins its network, PID or IPC namespace
(`container:<ref>`) or mounts its volumes (`--volumes-from`). A holder is never killed while
a dependent runs and never removed while a dependent exists. When unsure, the holder is held:
a dependent whose settings could not be read, or whose reference names no container the way
the daemon resolves it, holds every container it might mean. No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from janitor.model import Action, Container, NamespaceUser, Rules, State, Verb
from janitor.policy import is_in_scope, is_marked_holder

# A dependent whose processes live (paused and restarting ones too) still uses the namespaces.
LIVE_STATES = frozenset({State.RUNNING, State.PAUSED, State.RESTARTING})
_JOINED = "container:"
_FULL_ID = re.compile(r"[0-9a-f]{64}")


def references(modes: Iterable[str], volumes_from: Iterable[str] = ()) -> tuple[str, ...]:
    """The containers named by namespace modes (`container:<ref>`) and --volumes-from entries
    (`<ref>` or `<ref>:ro|rw`), as written."""
    joined = [mode.removeprefix(_JOINED) for mode in modes if mode.startswith(_JOINED)]
    mounted = [entry.split(":", 1)[0] for entry in volumes_from if entry]
    return tuple(dict.fromkeys(ref for ref in joined + mounted if ref))


@dataclass(frozen=True, slots=True)
class Dependents:
    """Who depends on whom on one host, read from every container whatever the selector."""

    by_holder: Mapping[str, tuple[NamespaceUser, ...]] = field(default_factory=dict)
    # Dependents whose holder cannot be told (unreadable settings, a name that matches no
    # container): they count as dependents of every container.
    of_everyone: tuple[NamespaceUser, ...] = ()

    def of(self, holder_id: str) -> tuple[NamespaceUser, ...]:
        everyone = tuple(user for user in self.of_everyone if user.id != holder_id)
        return self.by_holder.get(holder_id, ()) + everyone


NO_DEPENDENTS = Dependents()


@dataclass(frozen=True, slots=True)
class _Index:
    ids: frozenset[str]
    names: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, users: Sequence[NamespaceUser]) -> _Index:
        names: dict[str, set[str]] = {}
        for user in users:
            names.setdefault(user.name.lstrip("/"), set()).add(user.id)
        return cls(frozenset(u.id for u in users), {n: frozenset(i) for n, i in names.items()})


def resolve(reference: str, users: Sequence[NamespaceUser]) -> frozenset[str] | None:
    """The ids a reference may mean, in the daemon's order: a full id, then a name, then a
    short-id prefix (every container it prefixes, if several). None: it names no container
    that exists, yet may mean one (a name, since names change); the empty set: it names a
    removed container (a full id, which no container ever takes again)."""
    return _resolve(reference, _Index.of(users))


def _resolve(reference: str, index: _Index) -> frozenset[str] | None:
    if reference in index.ids:
        return frozenset({reference})
    if named := index.names.get(reference.lstrip("/")):
        return named
    if prefixed := frozenset(i for i in index.ids if i.startswith(reference)):
        return prefixed
    return frozenset() if _FULL_ID.fullmatch(reference) else None


def dependents(users: Iterable[NamespaceUser]) -> Dependents:
    """Every holder's dependents among `users`, the host's containers in every state."""
    listed = list(users)
    index = _Index.of(listed)
    by_holder: dict[str, list[NamespaceUser]] = {}
    of_everyone: list[NamespaceUser] = []
    for user in listed:
        if user.references is None:
            of_everyone.append(user)
            continue
        for reference in user.references:
            meant = _resolve(reference, index)
            if meant is None:
                of_everyone.append(user)
                break
            for holder_id in meant - {user.id}:
                by_holder.setdefault(holder_id, []).append(user)
    return Dependents(
        by_holder={holder: tuple(found) for holder, found in by_holder.items()},
        of_everyone=tuple(of_everyone),
    )


def is_held(action: Action, found: Dependents) -> bool:
    """Whether a dependent forbids the action: a live one any kill, any one a removal."""
    mine = found.of(action.container_id)
    if action.verb is Verb.KILL:
        return any(user.state in LIVE_STATES for user in mine)
    return bool(mine)


def spare_held(actions: Iterable[Action], found: Dependents) -> tuple[list[Action], list[Action]]:
    """The actions that may go ahead, and the holders spared for their dependents.

    A bad-label action is never carried out anyway and stays in the report as it is.
    """
    allowed: list[Action] = []
    held: list[Action] = []
    for action in actions:
        (held if action.actionable and is_held(action, found) else allowed).append(action)
    return allowed, held


def orphaned_holders(
    containers: Iterable[Container], rules: Rules, found: Dependents
) -> frozenset[str]:
    """Running `janitor.holder=true` containers in scope that no dependent runs with now."""
    return frozenset(
        c.id
        for c in containers
        if c.state == State.RUNNING
        and is_marked_holder(c.labels)
        and is_in_scope(c, rules)
        and not any(user.state in LIVE_STATES for user in found.of(c.id))
    )
