"""The sweep engine, one for every kind of sweep: survey, inspect, decide, cap, re-check, act.

WHAT it sweeps and why comes from a `Kind` (the policy's decisions bound to the adapter's
verbs, see `kinds`); the engine owns only the safety machinery every kind shares: the
blast-radius cap, the dry run, the lease confirmed before each batch of actions and the
decision taken again right before each action, bounded concurrency, the deadline (over
inspecting as well as acting), one log line per action and the report.
It knows nothing of Celery and nothing of how the host, the clock or the lease were obtained.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

import structlog

from janitor.brakes import NOT_REACHED, Halt, Inspected, LeaseBatches, log_cut_short
from janitor.errors import ContainerError, ContainerGoneError, HostError, LeaseLostError
from janitor.locks import Lease
from janitor.model import Action, ActionResult, Outcome, Status, SweepReport, Task
from janitor.vocabulary import Detail

if TYPE_CHECKING:
    from janitor.settings import Settings

log = structlog.get_logger(__name__)

Snapshot = TypeVar("Snapshot")


@dataclass(frozen=True, slots=True)
class Survey:
    """What one list call showed: how many matched, by state, and which deserve an inspect."""

    scanned: int
    census: Mapping[str, int]
    candidate_ids: Sequence[str]


class Kind(Protocol, Generic[Snapshot]):
    """One kind of sweep: what to look at, what to do, whether it still holds, how to do it."""

    task: Task

    def survey(self, now: datetime) -> Survey: ...

    def inspect(self, item_id: str) -> Snapshot:
        """The item as it is now; ContainerGoneError when it no longer exists."""

    def decide(self, snapshots: Sequence[Snapshot], now: datetime) -> list[Action]: ...

    def why_not(self, action: Action, current: Snapshot, now: datetime) -> str | None:
        """Why the action must not go ahead on the item as it is now; None when it may."""

    def act(self, action: Action, current: Snapshot) -> Detail | None:
        """Do it; the caveat of an action that was done anyway, if any."""


@runtime_checkable
class Batched(Protocol):
    """A kind whose re-checks read something of the whole host (a holder's dependents): one
    reading per batch of actions, taken after the batch began, serves every re-check in it."""

    def begin_batch(self) -> None: ...


@runtime_checkable
class Holds(Protocol):
    """A kind that spares some items for others' sake (holders for their dependents): they
    are not actions, so the report counts them apart. `not_read`: the items whose part in
    that the deadline left unread (each then spares every item, and the tick is cut short)."""

    held: int

    @property
    def not_read(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SweepOptions:
    """How one sweep acts, apart from which items it picks."""

    task: Task
    dry_run: bool = False
    concurrency: int = 8
    max_actions: int = 1000
    stop_timeout: timedelta = timedelta(seconds=5)
    remove_volumes: bool = True
    # time.monotonic() past which no new inspect or action starts; the rest waits for the
    # next tick. Inspecting may use only the first half of the time left at the start, so a
    # sweep cut short still acts on some of what it inspected.
    deadline: float | None = None
    # Asked before each action: True while something more urgent than this sweep needs the
    # daemon (a spawn spike, for removal sweeps); then no new action starts. Must be cheap.
    yield_to: Callable[[], bool] | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        task: Task,
        deadline: float | None = None,
        yield_to: Callable[[], bool] | None = None,
    ) -> SweepOptions:
        return cls(
            task=task,
            dry_run=settings.dry_run,
            concurrency=settings.concurrency,
            max_actions=settings.max_actions,
            stop_timeout=settings.stop_timeout,
            remove_volumes=settings.remove_volumes,
            deadline=deadline,
            yield_to=yield_to,
        )


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """Who swept what, when: the part of a report known before the sweep learns anything."""

    task: Task
    host: str
    dry_run: bool
    started: float = field(default_factory=time.monotonic)

    def report(
        self,
        status: Status,
        now: datetime | None,
        *,
        scanned: int = 0,
        results: tuple[ActionResult, ...] = (),
        error: str = "",
        census: Mapping[str, int] | None = None,
        held: int = 0,
    ) -> SweepReport:
        """The one way a sweep report is made, by the engine and by the tick before it."""
        return SweepReport(
            task=self.task,
            host=self.host,
            dry_run=self.dry_run,
            status=status,
            daemon_time=now,
            scanned=scanned,
            duration_s=time.monotonic() - self.started,
            results=results,
            error=error if status is Status.FAILED else "",
            census=census or {},
            held=held,
        )


def run_engine(
    kind: Kind[Snapshot],
    header: ReportHeader,
    options: SweepOptions,
    lease: Lease,
    now: datetime,
) -> SweepReport:
    """Sweep one host whose daemon clock reads `now`; never raises for host or lease trouble."""
    return _Engine(kind, header, options, lease, now).run()


class _Engine(Generic[Snapshot]):
    def __init__(
        self,
        kind: Kind[Snapshot],
        header: ReportHeader,
        options: SweepOptions,
        lease: Lease,
        now: datetime,
    ) -> None:
        self.kind = kind
        self.header = header
        self.options = options
        self.now = now
        self.log = log.bind(host=header.host, task=header.task.value, dry_run=header.dry_run)
        self.halt = Halt()
        on_batch = kind.begin_batch if isinstance(kind, Batched) else lambda: None
        self.lease_batches = LeaseBatches(lease, options.concurrency, on_batch)
        # No inspect starts past it: the first half of the time left when the sweep began.
        self.inspect_by: float | None = None
        if options.deadline is not None:
            begun = time.monotonic()
            self.inspect_by = begun + max(0.0, options.deadline - begun) / 2

    def run(self) -> SweepReport:
        if self._past(self.options.deadline):
            # Not even the list call: the tick spent its time before the sweep began.
            log_cut_short(self.log, candidates=0, inspected=Inspected([]), results=[])
            return self.header.report(Status.OK, self.now)
        try:
            survey = self.kind.survey(self.now)
            inspected = self._inspect_all(survey.candidate_ids)
            # A kind may ask the host more to decide (a holder's dependents).
            actions = self.kind.decide(inspected.snapshots, self.now)
        except HostError as exc:
            return self.header.report(Status.FAILED, self.now, error=str(exc))
        actionable = [a for a in actions if a.actionable]
        results = [
            ActionResult(a, Outcome.REFUSED, Detail.BAD_LABEL) for a in actions if not a.actionable
        ]
        self.log.debug(
            "sweep_decided",
            scanned=survey.scanned,
            candidates=len(survey.candidate_ids),
            eligible=len(actionable),
        )
        status, error = self._gate(actionable, results, inspected.failed + inspected.not_reached)
        for result in results:
            self._log_result(result)
        if status is Status.OK and not self.options.dry_run:
            results += self._act_all(actionable)  # logs each action as it ends
            status, error = self.halt.status, self.halt.reason
        not_read = self.kind.not_read if isinstance(self.kind, Holds) else 0
        if inspected.not_reached or not_read or self.halt.detail is Detail.DEADLINE_REACHED:
            log_cut_short(
                self.log,
                candidates=len(survey.candidate_ids),
                inspected=inspected,
                results=results,
                dependents_not_read=not_read,
            )
        return self.header.report(
            status,
            self.now,
            scanned=survey.scanned,
            results=tuple(results),
            error=error,
            census=survey.census,
            held=self.kind.held if isinstance(self.kind, Holds) else 0,
        )

    def _gate(
        self, actionable: list[Action], results: list[ActionResult], uninspected: int
    ) -> tuple[Status, str]:
        """The blast-radius cap and the dry run: what happens before anything is changed.

        A candidate that could not be inspected might be eligible too: the cap counts it, so a
        host that answers inspects with errors cannot hide a runaway selector.
        """
        if len(actionable) + uninspected > self.options.max_actions:
            self.log.error(
                "sweep_aborted",
                eligible=len(actionable),
                uninspected=uninspected,
                max_actions=self.options.max_actions,
                why="more eligible than JANITOR_MAX_ACTIONS; nothing was changed",
            )
            results += [
                ActionResult(a, Outcome.REFUSED, Detail.OVER_MAX_ACTIONS) for a in actionable
            ]
            return Status.ABORTED, ""
        if self.options.dry_run:
            results += [ActionResult(a, Outcome.PLANNED) for a in actionable]
        return Status.OK, ""

    def _inspect_all(self, ids: Sequence[str]) -> Inspected[Snapshot]:
        """The candidates as inspected before the inspect deadline; those not reached wait
        for the next tick."""

        def inspect(item_id: str) -> Snapshot | ContainerError | object | None:
            if self._past(self.inspect_by):
                return NOT_REACHED
            try:
                return self.kind.inspect(item_id)
            except ContainerGoneError:
                return None  # removed since the list: nothing to decide about
            except ContainerError as exc:
                return exc  # the daemon answered this one with an error; the others go on

        if not ids:
            return Inspected([])
        order = list(ids)
        if self.inspect_by is not None:
            # A tick cut short reaches the first candidates only; in a fresh order each time,
            # candidates that stay (held, refused) cannot keep the others from ever being
            # reached. Seeded by the daemon's clock: time is a parameter here.
            random.Random(self.now.timestamp()).shuffle(order)
        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="inspect") as pool:
            found = list(pool.map(inspect, order))
        failed = {i: f for i, f in zip(order, found, strict=True) if isinstance(f, ContainerError)}
        for item_id, error in failed.items():
            self.log.warning("inspect_failed", container_id=item_id, error=str(error))
        snapshots: list[Snapshot] = [
            f  # type: ignore[misc]  # what is left is a snapshot
            for f in found
            if f is not None and f is not NOT_REACHED and not isinstance(f, ContainerError)
        ]
        not_reached = sum(1 for f in found if f is NOT_REACHED)
        return Inspected(snapshots, len(failed), not_reached)

    @staticmethod
    def _past(instant: float | None) -> bool:
        return instant is not None and time.monotonic() > instant

    def _act_all(self, actions: Sequence[Action]) -> list[ActionResult]:
        results: list[ActionResult | None] = [None] * len(actions)
        pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="act")
        try:
            futures = {pool.submit(self._act, action): i for i, action in enumerate(actions)}
            # Each change is logged as soon as it is made, not when the sweep ends: a worker
            # killed mid-sweep (hard time limit, OOM, SIGKILL) still leaves a line for every
            # item it touched. Logged from this thread, which carries the task's context.
            for future in as_completed(futures):
                result = future.result()
                self._log_result(result)
                results[futures[future]] = result
        finally:
            # Interrupted here (a soft time limit, Ctrl-C): actions not yet started never start.
            pool.shutdown(wait=True, cancel_futures=True)
        done = [result for result in results if result is not None]
        if self.halt.detail is Detail.YIELDED_TO_SPIKE:
            yielded = sum(1 for result in done if result.detail == Detail.YIELDED_TO_SPIKE)
            self.log.info("sweep_yielded", why=self.halt.reason, yielded=yielded)
        elif self.halt and self.halt.detail is not Detail.DEADLINE_REACHED:
            # A deadline is the sweep_cut_short line's business.
            self.log.warning("sweep_halted", why=self.halt.reason, status=self.halt.status.value)
        return done

    def _act(self, action: Action) -> ActionResult:
        if self.halt:
            # Why it stopped is the sweep_halted line and the report's error; not repeated per item.
            return ActionResult(action, Outcome.REFUSED, self.halt.detail)
        if stop := self._why_no_new_action():
            return ActionResult(action, Outcome.REFUSED, stop)
        try:
            return self._recheck_and_act(action)
        except ContainerError as exc:
            return ActionResult(action, exc.outcome, str(exc))
        except LeaseLostError as exc:
            self.halt(str(exc))
            return ActionResult(action, Outcome.REFUSED, Detail.LEASE_LOST)
        except HostError as exc:
            self.halt(str(exc))
            return ActionResult(action, Outcome.FAILED, str(exc))

    def _why_no_new_action(self) -> Detail | None:
        """Why no action may start now; the first to find it stops the sweep, status ok."""
        if self.options.yield_to is not None and self.options.yield_to():
            self.halt(
                "a spawn spike began; the rest waits for the gap",
                Status.OK,
                Detail.YIELDED_TO_SPIKE,
            )
            return Detail.YIELDED_TO_SPIKE
        if self._past(self.options.deadline):
            self.halt(
                "deadline reached; the rest waits for the next tick",
                Status.OK,
                Detail.DEADLINE_REACHED,
            )
            return Detail.DEADLINE_REACHED
        return None

    def _recheck_and_act(self, action: Action) -> ActionResult:
        self.lease_batches.admit()
        current = self.kind.inspect(action.container_id)
        why_not = self.kind.why_not(action, current, self.now)
        if why_not:
            return ActionResult(action, Outcome.REFUSED, why_not)
        try:
            caveat = self.kind.act(action, current)
        except ContainerGoneError:
            # A 404 is "gone" only if the item is really gone: an engine may answer 404 for
            # a route or a state it does not know while the container keeps running.
            self.kind.inspect(action.container_id)
            return ActionResult(action, Outcome.FAILED, Detail.STILL_THERE_AFTER_404)
        return ActionResult(action, Outcome.DONE, caveat or "")

    def _log_result(self, result: ActionResult) -> None:
        action = result.action
        bound = self.log.bind(
            container_id=action.container_id,
            name=action.name,
            action=action.verb.value,
            reason=action.reason.value,
        )
        if result.detail:
            bound = bound.bind(detail=result.detail)
        # One literal event name per outcome, so each can be found with grep.
        match result.outcome:
            case Outcome.DONE:
                bound.info("action_done")
            case Outcome.PLANNED:
                bound.info("action_planned")
            case Outcome.GONE:
                bound.info("action_gone")
            case Outcome.REFUSED:
                bound.info("action_refused")
            case Outcome.FAILED:
                bound.warning("action_failed")
