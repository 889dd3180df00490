"""`python -m bench`: start private daemons, run the cases, print the ratios, write the JSON."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import custodian, holders
from bench.cases import CASES, Context, Scale
from bench.harness import REPO_ROOT, Host, machine_facts, write_json
from bench.targets import evaluate
from janitor.children import interrupt_on_signals

DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "latest.json"
# The cases that have a docker-custodian anchor; the others never need its venv.
CUSTODIAN_CASES = frozenset({"backlog", "ghosts", "idle", "startup"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.size is not None:
        scale = Scale.uniform(args.size, args.hosts)
    elif args.quick:
        scale = Scale.quick(args.hosts)
    else:
        scale = Scale(hosts=args.hosts)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    chosen = args.only or list(CASES)
    # A CI job killed on timeout sends SIGTERM: unwinding as Ctrl-C does removes the daemons.
    interrupt_on_signals()
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"bench [{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="janitor-bench-"))
    needed = scale.hosts if "hosts" in chosen else 1
    hosts = [Host(f"h{index + 1}") for index in range(needed)]
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    try:
        say(f"starting {needed} private dockerd(s) under /tmp/jt-*")
        _start_all(hosts)
        tools = None
        if not args.no_custodian and CUSTODIAN_CASES & set(chosen):
            say(f"installing {custodian.CUSTODIAN_REQUIREMENT} in a venv of its own")
            tools = custodian.install(workdir / "custodian-venv")
        context = Context(hosts, scale, rounds, tools, workdir, say)
        meta = _meta(hosts[0], scale, rounds, chosen, tools)
        for name in chosen:
            try:
                results[name] = CASES[name](context)
            except Exception as exc:  # noqa: BLE001  (one broken case must not lose the rest)
                failed[name] = "".join(traceback.format_exception(exc))
                say(f"{name} failed:\n{failed[name]}")
                for host in hosts:
                    host.empty()
    finally:
        say("removing the daemons and temp dirs")
        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(Host.cleanup, hosts))
        shutil.rmtree(workdir, ignore_errors=True)

    table = evaluate(results)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["machine"]["loadavg_end"] = [round(load, 1) for load in os.getloadavg()]
    document = {"meta": meta, "cases": results, "targets": table.to_json(), "errors": failed}
    write_json(args.out, document)
    print(_heading(meta))
    print(table.render())
    if "holders" in results:
        print(holders.render(results["holders"]))
    print(f"\nraw figures: {args.out}")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the janitor against the tools users would pick instead.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, one round")
    parser.add_argument("--rounds", type=int, help="rounds per measurement (default 3)")
    parser.add_argument("--only", nargs="+", choices=list(CASES), metavar="NAME",
                        help=f"run only these cases: {', '.join(CASES)}")  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON of raw figures")
    parser.add_argument("--hosts", type=int, default=4, help="daemons in the hosts case")
    parser.add_argument("--size", type=int, help="every count set to this (smoke runs)")
    parser.add_argument(
        "--no-custodian",
        action="store_true",
        help="skip dcgc and dcstop (no venv, no network)",
    )
    return parser


def _start_all(hosts: list[Host]) -> None:
    # dockerd takes seconds to come up: start them side by side.
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(Host.start, hosts))


def _meta(
    host: Host, scale: Scale, rounds: int, cases: list[str], tools: custodian.Custodian | None
) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(host),
        "scale": vars(scale),
        "rounds": rounds,
        "cases": cases,
        "custodian": None if tools is None else tools.packages,
    }


def _heading(meta: dict[str, Any]) -> str:
    machine = meta["machine"]
    return (
        f"\njanitor bench, {meta['date']}: {machine['nproc']} CPUs, "
        f"{machine['mem_total_gib']} GiB, dockerd {machine['dockerd']} "
        f"({machine['storage_driver']}), load average {machine['loadavg_start'][0]} at the "
        f"start and {machine['loadavg_end'][0]} at the end, {meta['rounds']} round(s), medians\n"
    )
