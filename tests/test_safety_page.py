"""docs/SAFETY.md cannot rot: every code and test it cites exists, and every invariant says
what guards it (or that nothing does yet)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "SAFETY.md"
# `path.py::Name.attr` or `path.py::test_name[case]`, in backticks.
CITATION = re.compile(r"`(?P<path>[\w/]+\.py)::(?P<name>[\w.]+)(?:\[(?P<case>[^\]`]+)\])?`")
SECTION = re.compile(r"^### (?P<title>.+)$", re.MULTILINE)


def _citations() -> list[re.Match[str]]:
    return list(CITATION.finditer(PAGE.read_text()))


def _sections() -> dict[str, str]:
    text = PAGE.read_text()
    starts = list(SECTION.finditer(text))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {m["title"]: text[m.end() : end] for m, end in zip(starts, ends, strict=True)}


def _defines(tree: ast.Module, dotted: str) -> bool:
    """Whether `dotted` (a function, class, method or module-level name) is defined there."""
    scope: list[ast.stmt] = tree.body
    for part in dotted.split("."):
        found = None
        for node in scope:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if node.name == part:
                    found = node
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == part for t in targets):
                    found = node
        if found is None:
            return False
        scope = found.body if isinstance(found, ast.ClassDef) else []
    return True


def test_the_page_cites_code_and_tests() -> None:
    cited = {m["path"].split("/")[0] for m in _citations()}
    assert {"janitor", "tests"} <= cited


@pytest.mark.parametrize(
    "citation", sorted({m.group(0) for m in _citations()}), ids=lambda c: c.strip("`")
)
def test_every_citation_exists(citation: str) -> None:
    match = CITATION.fullmatch(citation)
    assert match
    source = REPO / match["path"]
    assert source.is_file(), f"{match['path']} does not exist"
    text = source.read_text()
    assert _defines(ast.parse(text), match["name"]), f"{match['path']} defines no {match['name']}"
    if match["case"]:
        # Cited cases are the explicit pytest.param ids.
        assert f'id="{match["case"]}"' in text, f"{match['path']} has no case {match['case']}"


def test_every_invariant_says_why_where_and_what_guards_it() -> None:
    sections = _sections()
    assert sections
    for title, body in sections.items():
        for field in ("**Why:**", "**Enforced:**", "**Guarded by:**"):
            assert field in body, f"{title!r} has no {field}"
        guarded = body.split("**Guarded by:**", 1)[1]
        assert "`tests/" in guarded or "no test yet" in guarded, f"{title!r} names no guard"


def test_the_readme_links_the_page() -> None:
    assert "docs/SAFETY.md" in (REPO / "README.md").read_text()
