"""The `janitor` command line: its arguments, its exit codes, and which command runs.

It parses the arguments before importing anything heavy: `--help` and `--version` need none
of pydantic, the Docker SDK, Redis, Celery or structlog, and each command imports only what it
uses (`commands` for sweep, status and run; `checks` for check).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from janitor.cli_words import ALL_TASKS, EXIT_CONFIG, TASKS

DISTRIBUTION = "container-janitor"

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _import_structlog_without_rich()
    from janitor.errors import ConfigError

    try:
        code: int = _handler(args.command)(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"janitor: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
    return code


def _handler(command: str) -> Handler:
    if command == "check":
        from janitor import checks

        return checks.check
    from janitor import commands

    handlers: dict[str, Handler] = {
        "sweep": commands.sweep,
        "status": commands.status,
        "run": commands.run,
    }
    return handlers[command]


def _import_structlog_without_rich() -> None:
    """Import structlog with `rich` out of sight, unless something imported rich already.

    structlog's dev module imports rich (and pygments) for tracebacks that the janitor's
    console renderer never uses (it renders plain ones); only the development environment has
    rich (import-linter brings it), where it cost every command a tenth of a second. Hiding it
    makes the development CLI start as the installed one does.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    # A None entry makes `import rich` raise ImportError, which structlog expects.
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401  (imported here so that rich stays out of it)
    finally:
        del sys.modules["rich"]


class _VersionAction(argparse.Action):
    """`--version` reads the installed distribution's metadata only when it is asked for:
    importlib.metadata and its scan of the path cost more than the rest of `--help`."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("help", "show program's version number and exit")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib import metadata

        print(f"{parser.prog} {metadata.version(DISTRIBUTION)}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="janitor",
        description="Kill ghost containers and remove stopped ones on Docker hosts.",
        epilog="Configuration comes from JANITOR_* environment variables; see the README.",
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sweep = commands.add_parser("sweep", help="sweep now, in this process, without a broker")
    sweep.add_argument("--task", choices=sorted([*TASKS, ALL_TASKS]), default=ALL_TASKS)
    sweep.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME",
        help="a host of JANITOR_HOSTS (repeatable; default: every configured host)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="decide and report, change nothing")
    sweep.add_argument("--json", action="store_true", help="print a JSON array of reports only")

    check = commands.add_parser("check", help="validate the config, reach Redis and every host")
    check.add_argument("--json", action="store_true", help="print one JSON object of checks")

    status = commands.add_parser(
        "status", help="the fleet at a glance, from Redis: every host's last sweeps"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser(
        "run", help="worker + embedded beat + Flower on this machine (starts Redis if needed)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
