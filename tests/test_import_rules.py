"""The import rules in pyproject.toml bite: each planted import breaks its rule and no other."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

DEV_TREES = "janitor never imports the development trees"
DOCKER = "only dockerhost imports the Docker SDK and its HTTP stack"
PURE = "policy, model and vocabulary are pure"
CELERY = "only the Celery layer imports Celery"
CELERY_LAYER = "only the Celery layer and the package's lazy app import the Celery layer"


def lint_imports(root: Path) -> tuple[int, dict[str, str]]:
    """Run lint-imports on the tree at `root`; its exit code and each contract's verdict."""
    # lint-imports puts its working directory first on sys.path, so a copy in `root` shadows the
    # installed package.
    done = subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--no-logo"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    verdicts = dict(re.findall(r"^(.+) (KEPT|BROKEN)\b", done.stdout, re.MULTILINE))
    assert verdicts, done.stdout + done.stderr
    return done.returncode, verdicts


def test_the_tree_keeps_every_rule() -> None:
    code, verdicts = lint_imports(REPO)
    assert code == 0
    assert set(verdicts.values()) == {"KEPT"}
    assert set(verdicts) == {DEV_TREES, DOCKER, PURE, CELERY, CELERY_LAYER}


@pytest.mark.parametrize(
    ("module", "planted", "broken"),
    [
        ("pacing.py", "import docker", DOCKER),
        ("newroom.py", "import docker", DOCKER),
        ("newwing/__init__.py", "from requests import Session", DOCKER),
        ("settings.py", "import urllib3", DOCKER),
        ("cli.py", "from sandbox import demo", DEV_TREES),
        ("service.py", "import bench.harness", DEV_TREES),
        ("sweep.py", "from support.containers import run_container", DEV_TREES),
        ("policy.py", "import janitor.settings", PURE),
        ("model.py", "import redis", PURE),
        ("vocabulary.py", "from janitor import keys", PURE),
        ("unused.py", "from janitor import firstseen", PURE),
        ("unused.py", "import structlog", PURE),
        ("sweep.py", "import celery", CELERY),
        ("newroom.py", "from kombu import Queue", CELERY),
        ("sweep.py", "from janitor.tasks import kill_ghosts", CELERY_LAYER),
    ],
)
def test_a_planted_import_breaks_its_rule(
    tmp_path: Path, module: str, planted: str, broken: str
) -> None:
    shutil.copytree(
        REPO / "janitor", tmp_path / "janitor", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / "janitor" / module
    target.parent.mkdir(exist_ok=True)
    before = target.read_text() if target.exists() else '"""A room nobody listed."""\n'
    target.write_text(f"{before}\n{planted}\n")

    code, verdicts = lint_imports(tmp_path)

    assert code != 0
    assert {name for name, verdict in verdicts.items() if verdict == "BROKEN"} == {broken}
