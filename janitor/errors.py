"""The janitor's named errors; each says what it means for a sweep or an action."""

from __future__ import annotations

from janitor.model import Outcome


class JanitorError(Exception):
    """Base of every error the janitor raises on purpose."""


class ConfigError(JanitorError):
    """The configuration cannot be used; nothing was touched. The CLI exits 2."""


class UnknownHostError(ConfigError):
    """A sweep was asked for a host name that is not in JANITOR_HOSTS."""


class HostError(JanitorError):
    """The whole host cannot be swept now: its sweep reports `failed`, other hosts go on."""


class HostUnreachableError(HostError):
    """The daemon did not answer: socket missing, connection refused, TLS refused, timeout."""


class DaemonError(HostError):
    """The daemon answered a host-level call (version, info, list, events) with an error."""


class RedisUnavailableError(HostError):
    """Redis could not be reached for the lease or the identity record; the sweep is failed,
    not skipped."""


class WrongHostError(HostError):
    """The host name now reaches a different daemon than the one it reached before."""


class LeaseLostError(HostError):
    """The sweep's lease expired or was taken over; it must not make another change."""


class LeasesUnknownError(JanitorError):
    """The Redis master changed lately (failover or restart): owner leases written just before
    may be lost, so for one lease TTL none of them is read as expired."""


class LeaseHeldError(JanitorError):
    """Another sweep of the same (host, task) holds the lease; this one does nothing.

    Only for a lease someone really holds: a Redis that cannot be asked is
    RedisUnavailableError."""


class ContainerError(JanitorError):
    """One container could not be acted on; `outcome` is what the report says about it."""

    outcome: Outcome = Outcome.FAILED


class ContainerGoneError(ContainerError):
    """404: someone else removed it between the list and the action."""

    outcome = Outcome.GONE


class ContainerConflictError(ContainerError):
    """409: the daemon refused (running, paused, not running, removal in progress)."""

    outcome = Outcome.REFUSED


class ActionFailedError(ContainerError):
    """The daemon answered one container's call with any other error (a 500, say)."""

    outcome = Outcome.FAILED


class UnsupportedByEngineError(ActionFailedError):
    """A 404 for the route, not the container: the engine lacks the call (Podman < 5.1 has no
    /containers/{id}/update). Never read as gone: the container may well be running."""
