"""The CLI's own surface, in process: --version and `check` (`--json`, the engine line)."""

from __future__ import annotations

import gc
import json
from contextlib import closing
from importlib import metadata

import pytest
from support.fakedaemon import EVENTS, PING, FakeDaemon, error_reply, ping_reply

from janitor import cli, cli_words


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
    assert cli.main(["check", "--json"]) == cli_words.EXIT_FAILED
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
    assert cli.main(["check", "--json"]) == cli_words.EXIT_CONFIG
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["checks"][0]["subject"] == "configuration"
    assert document["checks"][0]["message"].startswith("JANITOR_CONCURRENCY='0' is invalid")


PODMAN_43_PING = ping_reply(("Server", "Libpod/4.3.1 (linux)"), ("Libpod-Api-Version", "4.3.1"))


def _host_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], daemon: FakeDaemon
) -> dict[str, object]:
    monkeypatch.setenv("JANITOR_HOSTS", f"alpha={daemon.url}")
    monkeypatch.setenv("JANITOR_REDIS_URL", "redis://127.0.0.1:1/0")
    cli.main(["check", "--json"])
    checks: list[dict[str, object]] = json.loads(capsys.readouterr().out)["checks"]
    gc.collect()
    return checks[2]


@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
def test_check_names_the_engine_and_its_identity(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(FakeDaemon()) as daemon:
        daemon.answer(PING, PODMAN_43_PING)
        host = _host_check(monkeypatch, capsys, daemon)
    assert host["ok"] is True
    message = str(host["message"])
    assert message.startswith("Podman 4.3.1 (API 1.41), daemon podman:fake:")
    assert "events readable (2 start(s) in the last minute)" in message


@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
@pytest.mark.parametrize(("spike_rate", "ok"), [("0", True), ("120", False)])
def test_check_warns_when_events_cannot_serve_pacing_and_fails_when_pacing_is_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], spike_rate: str, ok: bool
) -> None:
    monkeypatch.setenv("JANITOR_SPIKE_RATE", spike_rate)
    with closing(FakeDaemon()) as daemon:
        daemon.answer(EVENTS, error_reply(500, "events backend unavailable"))
        host = _host_check(monkeypatch, capsys, daemon)
    assert host["ok"] is ok
    assert "Docker 20.10.24 (API 1.41)" in str(host["message"])
    assert "WARNING events unreadable, spike pacing" in str(host["message"])
