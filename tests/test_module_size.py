"""Every module of janitor/ stays small enough to read in one sitting: at most 400 lines."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "janitor"
MAX_LINES = 400
MODULES = sorted(path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py"))


def test_the_package_has_modules() -> None:
    assert "policy.py" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_is_short(module: str) -> None:
    lines = len((PACKAGE / module).read_text().splitlines())
    assert lines <= MAX_LINES, f"janitor/{module}: {lines} lines; split it where it mixes concerns"
