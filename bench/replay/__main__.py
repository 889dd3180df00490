"""`python -m bench.replay`: a seeded, compressed day of spikes replayed on one private dockerd
once per variant, back to back, each from an empty daemon; the JSON of every figure, a PNG
timeline per variant beside it, and the summary table on stdout.

    uv run python -m bench.replay                          # the full day: about 20 min a variant
    uv run python -m bench.replay --quick                  # the smoke test's day (no figures)
    uv run python -m bench.replay --spikes 3 --duration 6m --variants none janitor_on
    uv run python -m bench.replay --table bench/results/replay.json   # the table again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors
from requests.exceptions import RequestException

from bench import custodian
from bench.harness import BenchError, Host, machine_facts, write_json
from bench.replay import figures, plot
from bench.replay.cleaners import SPIKE_RATE, Cleaner, Cron, Janitor, NoCleanup, Timing
from bench.replay.replayer import Replayer
from bench.replay.sampler import Sampler
from bench.replay.schedule import Planned, Shape, build, spike_windows
from janitor.children import ChildError, interrupt_on_signals
from janitor.vocabulary import parse_duration
from sandbox.redisserver import PrivateRedis

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "replay.json"
VARIANTS = ("none", "cron", "janitor_off", "janitor_on")
JANITOR_VARIANTS = {"janitor_off": 0, "janitor_on": SPIKE_RATE}
# A full list call every this many seconds: the backlog's resolution, and a cost every variant
# pays alike (a host's users list too).
LIST_EVERY_S = 2.0
# What a variant may fail with and still leave the others to run: a tool or the service not
# doing its part, a daemon call failing.
VARIANT_FAILURES = (
    BenchError,
    ChildError,
    TimeoutError,
    docker.errors.DockerException,
    RequestException,
)
QUICK_LIST_EVERY_S = 1.0
# A daemon on a machine at a load of 60 took more than a minute for one forced removal.
EMPTY_TIMEOUT_S = 600


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.table is not None:
        print(figures.markdown(json.loads(args.table.read_text())))
        return 0
    shape = _shape(args)
    timing = Timing.quick() if args.quick else Timing.full()
    schedule = build(shape, args.seed)
    interrupt_on_signals()
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"replay [{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def save(results: dict[str, Any], errors: dict[str, str], meta: dict[str, Any]) -> None:
        # After every variant, so a run this long that breaks later keeps what it measured.
        meta["seconds"] = round(time.monotonic() - started, 1)
        meta["machine"]["loadavg_end"] = [round(load, 1) for load in os.getloadavg()]
        _save(args.out, shape=shape, timing=timing, meta=meta, results=results, errors=errors)

    results, errors = _run_all(
        args, shape=shape, timing=timing, schedule=schedule, say=say, save=save
    )
    document = json.loads(args.out.read_text())
    print(_heading(document))
    print(figures.markdown(document))
    print(f"\nraw figures: {args.out}")
    return 1 if errors or not results else 0


def _save(
    out: Path,
    *,
    shape: Shape,
    timing: Timing,
    meta: dict[str, Any],
    results: dict[str, Any],
    errors: dict[str, str],
) -> None:
    """The JSON of the variants measured so far, and their PNG timelines beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pictures = {
        name: str(plot.timeline(name, variant, out.with_name(f"{out.stem}-{name}.png")))
        for name, variant in results.items()
    }
    document = {
        "meta": meta,
        "shape": _plain(asdict(shape)),
        "timing": _plain(asdict(timing)),
        "variants": results,
        "ratios": figures.ratios(results),
        "errors": errors,
        "png": pictures,
    }
    write_json(out, document)


def _run_all(
    args: argparse.Namespace,
    *,
    shape: Shape,
    timing: Timing,
    schedule: Sequence[Planned],
    say: Callable[[str], None],
    save: Callable[[dict[str, Any], dict[str, str], dict[str, Any]], None],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every chosen variant on one private daemon, back to back, each from an empty one."""
    workdir = Path(tempfile.mkdtemp(prefix="janitor-replay-"))
    host = Host("replay")
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    meta: dict[str, Any] = {}
    try:
        with ExitStack() as stack:
            say("starting a private dockerd under /tmp/jt-*")
            stack.callback(host.cleanup)
            host.start()
            tools = None
            if "cron" in args.variants and not args.no_custodian:
                say(f"installing {custodian.CUSTODIAN_REQUIREMENT} in a venv of its own")
                tools = custodian.install(workdir / "custodian-venv")
            redis = None
            if JANITOR_VARIANTS.keys() & set(args.variants):
                redis = stack.enter_context(PrivateRedis())
            meta = _meta(host, args, tools)

            def cleaner_for(name: str) -> Cleaner:
                if name == "none":
                    return NoCleanup()
                if name == "cron":
                    return Cron(host, tools, timing)
                assert redis is not None
                return Janitor(
                    name, host, redis.url, workdir, timing, spike_rate=JANITOR_VARIANTS[name]
                )

            for name in args.variants:
                _empty(host)
                if redis is not None:
                    redis.flush()
                say(f"{name}: {len(schedule)} starts over {shape.total.total_seconds():.0f}s")
                try:
                    results[name] = _run_variant(
                        name=name,
                        host=host,
                        cleaner=cleaner_for(name),
                        schedule=schedule,
                        shape=shape,
                        quick=args.quick,
                        say=say,
                    )
                except VARIANT_FAILURES as exc:
                    # One broken variant must not lose the others of a run this long.
                    errors[name] = "".join(traceback.format_exception(exc))
                    say(f"{name} failed:\n{errors[name]}")
                else:
                    say(f"{name}: {json.dumps(results[name]['spike_median'])}")
                save(results, errors, meta)
            _empty(host)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results, errors


def _empty(host: Host) -> None:
    """Every container of the last variant gone, however slow the daemon: what runs killed,
    then one prune, on a client patient enough for a crushed daemon; stragglers the usual way."""
    api = docker.APIClient(base_url=host.url, timeout=EMPTY_TIMEOUT_S)
    try:
        for container in api.containers(quiet=True):
            try:
                api.kill(container["Id"])
            except docker.errors.APIError as error:
                if error.status_code not in {404, 409}:  # gone, or exited meanwhile
                    raise
        api.prune_containers()
    finally:
        api.close()
    host.empty()


def _run_variant(
    *,
    name: str,
    host: Host,
    cleaner: Cleaner,
    schedule: Sequence[Planned],
    shape: Shape,
    quick: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    replayer = Replayer(host.url, schedule, name)
    sampler = Sampler(
        host.url,
        replayer,
        cleaner.cpu_seconds,
        list_every_s=QUICK_LIST_EVERY_S if quick else LIST_EVERY_S,
    )
    load_start = os.getloadavg()[0]
    try:
        cleaner.start()
        t0 = time.time()
        sampler.start(t0)
        replayer.start(t0)
        end = t0 + shape.total.total_seconds()
        while (left := end - time.time()) > 0:
            time.sleep(min(5.0, left))
            cleaner.check_alive()
        replayer.join()
        sampler.stop()
        elapsed = time.time() - t0
    finally:
        replayer.stop()
        sampler.stop()
        cleaner.stop()
    starts = replayer.starts()
    sweeps = cleaner.sweeps(t0)
    created = sum(1 for start in starts if start.container_id)
    present = host.count()
    accounting = {
        "planned": len(schedule),
        "created": created,
        "start_failed": sum(1 for start in starts if start.error),
        "not_created": sum(1 for start in starts if not start.container_id),
        "ghosts": sum(1 for planned in schedule if planned.is_ghost),
        "present_at_end": present,
        "removed": created - present,
        "removed_reported": sum(sweep.removed for sweep in sweeps),
    }
    # A few of the daemon's answers to failed starts: a busy daemon's timeouts, or worse.
    accounting["start_errors"] = sorted({start.error for start in starts if start.error})[:3]
    say(f"{name}: {json.dumps(accounting)}")
    result = figures.variant(
        starts=starts,
        windows=spike_windows(shape),
        host=sampler.host,
        lists=sampler.lists,
        sweeps=sweeps,
        deferrals=cleaner.deferrals(t0),
        elapsed_s=elapsed,
        nproc=os.cpu_count() or 1,
        accounting=accounting,
    )
    result["settings"] = cleaner.settings
    result["loadavg"] = [round(load_start, 1), round(os.getloadavg()[0], 1)]
    return result


def _shape(args: argparse.Namespace) -> Shape:
    shape = Shape.quick() if args.quick else Shape()
    changes: dict[str, Any] = {}
    if args.spikes is not None:
        changes["spikes"] = args.spikes
    if args.spike_size is not None:
        changes["spike_size"] = tuple(args.spike_size)
    if args.spike_length is not None:
        changes["spike_length"] = parse_duration(args.spike_length)
    if args.duration is not None:
        changes.update(duration=parse_duration(args.duration), gap=None)
    if args.gap is not None:
        changes["gap"] = parse_duration(args.gap)
    return replace(shape, **changes)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay",
        description="Replay a compressed day of spikes once per kind of cleanup.",
    )
    parser.add_argument("--quick", action="store_true", help="the smoke test's short day")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--spikes", type=int, help="spikes in the day (default 5)")
    parser.add_argument("--spike-size", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="starts per spike, drawn in [MIN, MAX] (default 200 300)")  # fmt: skip
    parser.add_argument("--spike-length", help="seconds a spike's starts spread over (45s)")
    parser.add_argument("--duration", help="the day, spikes spread evenly over it (20m)")
    parser.add_argument("--gap", help="quiet time after each spike; overrides --duration")
    parser.add_argument("--seed", type=int, default=13, help="the schedule's seed")
    parser.add_argument("--no-custodian", action="store_true",
                        help="cron runs prune only: no dcstop, no venv, no network")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON; PNGs beside it")
    parser.add_argument("--table", type=Path, help="print the table of this JSON and exit")
    return parser


def _meta(
    host: Host, args: argparse.Namespace, tools: custodian.Custodian | None
) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seed": args.seed,
        "variants": list(args.variants),
        "machine": machine_facts(host),
        "custodian": None if tools is None else tools.packages,
    }


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Durations as seconds, for the JSON."""
    return {
        key: value.total_seconds() if hasattr(value, "total_seconds") else value
        for key, value in values.items()
    }


def _heading(document: dict[str, Any]) -> str:
    meta, shape = document["meta"], document["shape"]
    machine = meta["machine"]
    return (
        f"\njanitor replay, {meta['date']}{' (quick: not for figures)' if meta['quick'] else ''}"
        f": {shape['spikes']} spikes of {shape['spike_size'][0]}-{shape['spike_size'][1]} "
        f"starts in {shape['spike_length']:g}s, a day of {meta['seconds']:.0f}s in all; "
        f"{machine['nproc']} CPUs, dockerd {machine['dockerd']}, load average "
        f"{machine['loadavg_start'][0]} at the start and {machine['loadavg_end'][0]} at the "
        f"end (other people's work is in the CPU share)\n"
    )


if __name__ == "__main__":
    sys.exit(main())
