"""What ships: the wheel built from the project holds the janitor package and Celery's settings
module, never the development wing, the bench or the tests."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_only_the_janitor_and_celeryconfig(tmp_path: Path) -> None:
    subprocess.run(
        ["uv", "build", "--wheel", "--quiet", "-o", str(tmp_path)],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    (dist_info,) = [top for top in tops if top.endswith(".dist-info")]
    assert tops == {"janitor", "celeryconfig.py", dist_info}
    assert "janitor/children.py" in names
    assert not [name for name in names if "sandbox" in name or "demo" in name]
