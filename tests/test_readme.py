"""The README's configuration table is generated from the Settings class and must match it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from janitor.model import HostConfig, Selector
from janitor.settings import Settings
from janitor.settings_prune import PruneSettings
from janitor.vocabulary import format_duration

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- config-table -->", "<!-- /config-table -->"


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple) and all(isinstance(h, HostConfig) for h in value):
        return ",".join(f"{h.name}={h.url}" for h in value)
    if isinstance(value, Selector):
        return str(value)
    return str(value)


def expected_table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    # Pydantic lists a base class's fields first; the prune's part reads best after the rest.
    fields = sorted(
        Settings.model_fields.items(), key=lambda kv: kv[0] in PruneSettings.model_fields
    )
    for name, field in fields:
        default = _shown(field.default)
        rows.append(f"| `JANITOR_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


def test_readme_configuration_table_matches_the_settings_class() -> None:
    text = README.read_text()
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.DOTALL)
    assert match, f"README.md lacks the {BEGIN} ... {END} block"
    expected = expected_table()
    assert match.group(1).strip() == expected, (
        "README.md's configuration table drifted from janitor.settings.Settings; "
        f"replace the block with:\n{expected}"
    )


def test_readme_names_the_two_newcomer_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text


if __name__ == "__main__":
    print(expected_table())
