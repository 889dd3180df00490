"""TLS to a tcp Docker host: a private dockerd with --tlsverify on a loopback port, and a
throwaway CA, server and client certificates made with openssl for the session.

The janitor sweeps it with the right certificates, and refuses, changing nothing, with a CA
that did not sign the server, with no client certificate or one the daemon does not trust, and
with no TLS at all. Protected and unmanaged containers come through every case untouched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.bystanders import MANAGED, disturbed, plant_bystanders
from support.cli import janitor_env, run_janitor, sweep_json
from support.containers import container_ids, run_exited, run_running, state_or_gone
from support.tls import Pki, TlsDaemon, make_pki

# Every engine of the matrix runs these (see .ci/run).
pytestmark = pytest.mark.conformance

AGE = 1.5
AGED = {"max_runtime": "1s", "stopped_grace": "1s"}


@dataclass
class Planted:
    ghost: str
    exited: str
    bystanders: dict[str, str]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_daemon(pki: Pki) -> Iterator[TlsDaemon]:
    with TlsDaemon("tls", pki) as daemon:
        yield daemon


@pytest.fixture
def tls_host(tls_daemon: TlsDaemon) -> Iterator[TlsDaemon]:
    tls_daemon.reset()
    yield tls_daemon
    tls_daemon.reset()


def plant(host: TlsDaemon) -> Planted:
    """Through the daemon's unix socket: the janitor is the only tcp client."""
    client = host.client()
    planted = Planted(
        ghost=run_running(client, labels={**MANAGED, "janitor.stopped-grace": "1h"}),
        exited=run_exited(client, labels=MANAGED),
        bystanders=plant_bystanders(client),
    )
    time.sleep(AGE)
    return planted


def tls_env(
    host: TlsDaemon, *, ca: Path | None, cert: Path | None, key: Path | None
) -> dict[str, str]:
    env = janitor_env({"tls": host.tcp_url}, **AGED)
    for name, path in (("CA_CERT", ca), ("CLIENT_CERT", cert), ("CLIENT_KEY", key)):
        if path is not None:
            env[f"JANITOR_TLS_{name}"] = str(path)
    return env


def test_a_tls_host_is_swept_with_the_right_certificates(tls_host: TlsDaemon, pki: Pki) -> None:
    planted = plant(tls_host)
    env = tls_env(tls_host, ca=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    # A CA bundle in the environment (as CI images and corporate machines set) must neither
    # replace JANITOR_TLS_CA_CERT nor be needed.
    env |= {"REQUESTS_CA_BUNDLE": str(pki.other_ca_cert), "CURL_CA_BUNDLE": str(pki.other_ca_cert)}
    check = run_janitor(["check"], env)
    assert f"ok    host tls {tls_host.tcp_url}: Docker" in check.stdout, check.stdout
    run = sweep_json(env)
    assert run.code == 0, run.stdout + run.stderr
    killed = run.report("tls", "kill-ghosts")
    removed = run.report("tls", "remove-stopped")
    assert [(a["id"], a["outcome"]) for a in killed["actions"]] == [(planted.ghost, "done")]
    assert [(a["id"], a["outcome"]) for a in removed["actions"]] == [(planted.exited, "done")]
    client = tls_host.client()
    assert state_or_gone(client, planted.ghost) == "exited"
    assert state_or_gone(client, planted.exited) == "gone"
    assert not disturbed(client, planted.bystanders)


REFUSALS = {
    # The host's certificate is checked against the configured CA, and only that one: a
    # bundle in the environment that would trust it changes nothing.
    "another CA": (
        lambda pki: {"ca": pki.other_ca_cert, "cert": pki.client_cert, "key": pki.client_key},
        lambda pki: {"REQUESTS_CA_BUNDLE": str(pki.ca_cert), "CURL_CA_BUNDLE": str(pki.ca_cert)},
        "certificate verify failed",
    ),
    "no client certificate": (
        lambda pki: {"ca": pki.ca_cert, "cert": None, "key": None},
        lambda pki: {},
        "certificate",
    ),
    # Go's TLS stack names this one by its alert: "bad certificate" up to dockerd 20.10,
    # "unknown ca" from the Go that builds dockerd 26 on.
    "a client certificate of another CA": (
        lambda pki: {"ca": pki.ca_cert, "cert": pki.other_client_cert, "key": pki.other_client_key},
        lambda pki: {},
        "certificate|unknown ca",
    ),
    # Refused before anything reaches the daemon.
    "a client key that does not match the certificate": (
        lambda pki: {"ca": pki.ca_cert, "cert": pki.client_cert, "key": pki.other_client_key},
        lambda pki: {},
        "key values mismatch",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_tls_handshake_that_fails_changes_nothing(
    tls_host: TlsDaemon, pki: Pki, case: str
) -> None:
    certificates, environment, says = REFUSALS[case]
    planted = plant(tls_host)
    client = tls_host.client()
    before = {c: state_or_gone(client, c) for c in container_ids(client)}
    env = tls_env(tls_host, **certificates(pki)) | environment(pki)
    run = sweep_json(env)
    assert run.code == 1, run.stdout + run.stderr
    for report in run.reports:
        assert report["status"] == "failed"
        assert report["actions"] == []
        assert f"tls ({tls_host.tcp_url}) TLS handshake failed" in report["error"]
        assert re.search(says, report["error"].lower()), report["error"]
    check = run_janitor(["check"], env)
    assert check.code == 1
    assert f"FAIL  host tls {tls_host.tcp_url}:" in check.stdout, check.stdout
    assert {c: state_or_gone(client, c) for c in container_ids(client)} == before
    assert state_or_gone(client, planted.ghost) == "running"
    assert not disturbed(client, planted.bystanders)


def test_tcp_without_tls_is_refused(tls_host: TlsDaemon) -> None:
    planted = plant(tls_host)
    client = tls_host.client()
    before = {c: state_or_gone(client, c) for c in container_ids(client)}
    env = tls_env(tls_host, ca=None, cert=None, key=None)
    for command in (["sweep", "--json"], ["check"]):
        run = run_janitor(command, env)
        assert run.code == 2, run.stdout + run.stderr
        lines = (run.stdout + run.stderr).strip().splitlines()
        assert len(lines) == 1, lines
        assert "JANITOR_HOSTS" in lines[0]
        assert "tcp without TLS" in lines[0]
    # Allowed for a loopback host, plain HTTP meets the daemon's TLS port and gets nowhere.
    run = sweep_json(env | {"JANITOR_ALLOW_INSECURE_TCP": "true"})
    assert run.code == 1, run.stdout + run.stderr
    assert {r["status"] for r in run.reports} == {"failed"}
    assert all("HTTP request to an HTTPS server" in r["error"] for r in run.reports)
    assert {c: state_or_gone(client, c) for c in container_ids(client)} == before
    assert not disturbed(client, planted.bystanders)
