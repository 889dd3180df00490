"""Yelp's docker-custodian (dcgc, dcstop), installed in a virtual environment of its own.

It never shares the janitor's environment: its dependencies resolve on their own, in a venv
under the bench's temp dir that goes with it, and the janitor's lock file stays untouched.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# 0.7.4 is the newest release; it runs on Python 3.11 with docker 7.x against dockerd 20.10
# (checked when this bench was written), so there is no reason to hold an older one.
CUSTODIAN_REQUIREMENT = "docker-custodian==0.7.4"
INSTALL_TIMEOUT = 300


@dataclass(frozen=True)
class Custodian:
    """The two commands, and what pip actually installed for them (recorded in the JSON)."""

    dcgc: str
    dcstop: str
    packages: dict[str, str]


def install(venv: Path) -> Custodian:
    # The janitor's own interpreter has no pip; its base interpreter makes a venv that has.
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "install", "--quiet", CUSTODIAN_REQUIREMENT],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pip install {CUSTODIAN_REQUIREMENT} failed (it needs PyPI; --no-custodian "
            f"skips dcgc and dcstop):\n{done.stderr[-2000:]}"
        )
    frozen = subprocess.run(
        [*pip, "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    packages = dict(line.split("==", 1) for line in frozen if "==" in line)
    return Custodian(
        dcgc=str(venv / "bin" / "dcgc"), dcstop=str(venv / "bin" / "dcstop"), packages=packages
    )
