"""The CLI's own surface, in process: --version and `check --json`."""

from __future__ import annotations

import gc
import json
from importlib import metadata

import pytest

from janitor import cli


def test_version_names_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"janitor {metadata.version('container-janitor')}\n"


# docker-py leaves the socket of a failed unix connect to the garbage collector, which
# closes it at once; only the warning would reach a later test.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
def test_check_json_is_one_object_with_a_verdict_per_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JANITOR_HOSTS", "gone=unix:///nonexistent/docker.sock")
    monkeypatch.setenv("JANITOR_REDIS_URL", "redis://127.0.0.1:1/0")
    assert cli.main(["check", "--json"]) == cli.EXIT_FAILED
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert [(c["subject"], c["ok"]) for c in document["checks"]] == [
        ("configuration", True),
        ("redis redis://127.0.0.1:1/0", False),
        ("host gone unix:///nonexistent/docker.sock", False),
    ]
    assert "did not answer" in document["checks"][2]["message"]
    gc.collect()


def test_check_json_of_a_bad_configuration_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JANITOR_CONCURRENCY", "0")
    assert cli.main(["check", "--json"]) == cli.EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["checks"][0]["subject"] == "configuration"
    assert document["checks"][0]["message"].startswith("JANITOR_CONCURRENCY='0' is invalid")
