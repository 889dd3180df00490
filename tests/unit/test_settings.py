"""Settings from JANITOR_* variables: the contract's defaults and forms, one-line refusals."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from janitor.config_syntax import parse_hosts, redact_url
from janitor.errors import ConfigError, UnknownHostError
from janitor.model import HostConfig, Rules, Selector, TLSConfig
from janitor.settings import Settings, load_settings

DURATION_VARS = {
    "JANITOR_MAX_RUNTIME": "max_runtime",
    "JANITOR_STOPPED_GRACE": "stopped_grace",
    "JANITOR_CREATED_GRACE": "created_grace",
    "JANITOR_KILL_INTERVAL": "kill_interval",
    "JANITOR_REMOVE_INTERVAL": "remove_interval",
    "JANITOR_STOP_TIMEOUT": "stop_timeout",
    "JANITOR_DOCKER_TIMEOUT": "docker_timeout",
}
BOOL_VARS = {
    "JANITOR_ALLOW_INSECURE_TCP": "allow_insecure_tcp",
    "JANITOR_REMOVE_VOLUMES": "remove_volumes",
    "JANITOR_DRY_RUN": "dry_run",
}
CONTRACT_VARS = {
    "JANITOR_HOSTS",
    "JANITOR_TLS_CA_CERT",
    "JANITOR_TLS_CLIENT_CERT",
    "JANITOR_TLS_CLIENT_KEY",
    "JANITOR_ALLOW_INSECURE_TCP",
    "JANITOR_REDIS_URL",
    "JANITOR_SELECTOR",
    "JANITOR_MAX_RUNTIME",
    "JANITOR_STOPPED_GRACE",
    "JANITOR_CREATED_GRACE",
    "JANITOR_KILL_INTERVAL",
    "JANITOR_REMOVE_INTERVAL",
    "JANITOR_STOP_TIMEOUT",
    "JANITOR_REMOVE_VOLUMES",
    "JANITOR_CONCURRENCY",
    "JANITOR_MAX_ACTIONS",
    "JANITOR_DRY_RUN",
    "JANITOR_DOCKER_TIMEOUT",
    "JANITOR_LOG_FORMAT",
    "JANITOR_LOG_LEVEL",
    "JANITOR_METRICS_PORT",
    # The second round's namespace holders.
    "JANITOR_HOLDER_GRACE",
}
# Issue 6's pacing, pressure, owner leases and retention, beyond the contract's table.
EXTENSION_VARS = {
    "JANITOR_LEASE_GRACE",
    "JANITOR_KEEP_LAST",
    "JANITOR_MAX_STOPPED",
    "JANITOR_SPIKE_RATE",
    "JANITOR_MAX_DEFER",
    "JANITOR_PRESSURE_HIGH",
    "JANITOR_PRESSURE_LOW",
    "JANITOR_PRESSURE_GRACE_FLOOR",
    "JANITOR_PROC_ROOT",
    "JANITOR_PRUNE_INTERVAL",
    "JANITOR_UNUSED_GRACE",
    "JANITOR_IMAGE_DISK_BUDGET",
    "JANITOR_IMAGE_MIN_AGE",
    "JANITOR_DOCKER_ROOT",
    "JANITOR_REDIS_MASTER",
    "JANITOR_RESULT_TTL",
}
# Long enough that no timeout under test trips the interval check.
ROOMY_INTERVALS = {"JANITOR_KILL_INTERVAL": "30d", "JANITOR_REMOVE_INTERVAL": "30d"}


def clear_janitor_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # pydantic-settings matches names case-insensitively: janitor_hosts counts too.
    for name in list(os.environ):
        if name.upper().startswith("JANITOR_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_janitor_env(monkeypatch)


def set_env(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def load(monkeypatch: pytest.MonkeyPatch, **variables: str) -> Settings:
    set_env(monkeypatch, variables)
    return load_settings()


def assert_one_line(message: str) -> None:
    assert message
    assert "\n" not in message
    assert len(message.splitlines()) == 1


def refused(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    """The ConfigError message load_settings gives for these variables."""
    set_env(monkeypatch, variables)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert_one_line(message)
    # No chained ValidationError to print under it as a traceback.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    return message


def assert_names(message: str, variable: str, value: str, accepted: str) -> None:
    assert f"{variable}={value!r}" in message
    assert accepted in message


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca.pem", "cert.pem", "key.pem"):
        path = tmp_path / name
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        files[name] = str(path)
    return files


# --- defaults and accepted forms ---------------------------------------------------------------


def test_defaults_are_the_contracts() -> None:
    s = load_settings()
    assert s.hosts == (HostConfig("local", "unix:///var/run/docker.sock"),)
    assert s.tls_ca_cert is None
    assert s.tls_client_cert is None
    assert s.tls_client_key is None
    assert s.tls is None
    assert s.allow_insecure_tcp is False
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.selector == Selector("janitor.managed", "true")
    assert str(s.selector) == "janitor.managed=true"
    assert s.max_runtime == timedelta(hours=2)
    assert s.stopped_grace == timedelta(minutes=10)
    assert s.created_grace == timedelta(hours=1)
    assert s.kill_interval == timedelta(seconds=60)
    assert s.remove_interval == timedelta(minutes=5)
    assert s.stop_timeout == timedelta(seconds=5)
    assert s.remove_volumes is True
    assert s.concurrency == 8
    assert s.max_actions == 1000
    assert s.dry_run is False
    assert s.docker_timeout == timedelta(seconds=10)
    assert s.log_format == "json"
    assert s.log_level == "INFO"
    assert s.metrics_port == 0
    # The extensions default to off where they could change what the contract's rules do.
    assert s.lease_grace == timedelta(seconds=60)
    assert (s.keep_last, s.max_stopped, s.spike_rate) == (0, 0, 0)
    assert s.max_defer == timedelta(minutes=10)
    assert (s.pressure_high, s.pressure_low) == (0.8, 0.7)
    assert s.pressure_grace_floor == timedelta(0)


def test_every_contract_variable_is_a_setting() -> None:
    fields = {"JANITOR_" + name.upper() for name in Settings.model_fields}
    assert fields == CONTRACT_VARS | EXTENSION_VARS


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.concurrency = 3


def test_unrelated_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(monkeypatch, JANITOR_SOMETHING_ELSE="x").concurrency == 8


def test_lower_case_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(monkeypatch, janitor_concurrency="3").concurrency == 3


DURATION_FORMS = [
    ("90s", timedelta(seconds=90)),
    ("30m", timedelta(minutes=30)),
    ("2h", timedelta(hours=2)),
    ("7d", timedelta(days=7)),
    ("1h30m", timedelta(minutes=90)),
    ("300", timedelta(seconds=300)),
    ("PT2H", timedelta(hours=2)),
    ("P1DT2H", timedelta(days=1, hours=2)),
    (" 2h ", timedelta(hours=2)),
]


@pytest.mark.parametrize("variable", DURATION_VARS)
@pytest.mark.parametrize(("text", "expected"), DURATION_FORMS)
def test_duration_forms(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, expected: timedelta
) -> None:
    s = load(monkeypatch, **{**ROOMY_INTERVALS, variable: text})
    assert getattr(s, DURATION_VARS[variable]) == expected


def test_stop_timeout_zero_kills_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(monkeypatch, JANITOR_STOP_TIMEOUT="0s").stop_timeout == timedelta(0)


@pytest.mark.parametrize("variable", BOOL_VARS)
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
    ],
)
def test_bool_forms(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, expected: bool
) -> None:
    assert getattr(load(monkeypatch, **{variable: text}), BOOL_VARS[variable]) is expected


HOST_FORMS = [
    ("local=unix:///var/run/docker.sock", [("local", "unix:///var/run/docker.sock")]),
    ("a=unix:///a.sock,b=unix:///b.sock", [("a", "unix:///a.sock"), ("b", "unix:///b.sock")]),
    (
        " a = unix:///a.sock , b-2=unix:///b.sock ",
        [("a", "unix:///a.sock"), ("b-2", "unix:///b.sock")],
    ),
    ("0=unix:///x", [("0", "unix:///x")]),
    ("build-01=tcp://10.0.0.1:2376", [("build-01", "tcp://10.0.0.1:2376")]),
    ("d=tcp://docker.example.com:2376/", [("d", "tcp://docker.example.com:2376")]),
    ("v6=tcp://[fd00::1]:2376", [("v6", "tcp://[fd00::1]:2376")]),
]


@pytest.mark.parametrize(("text", "expected"), HOST_FORMS)
def test_host_forms(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, str], text: str, expected: list[tuple[str, str]]
) -> None:
    s = load(
        monkeypatch,
        JANITOR_HOSTS=text,
        JANITOR_TLS_CA_CERT=pem["ca.pem"],
        JANITOR_TLS_CLIENT_CERT=pem["cert.pem"],
        JANITOR_TLS_CLIENT_KEY=pem["key.pem"],
    )
    assert [(h.name, h.url) for h in s.hosts] == expected
    assert all(h.queue == f"janitor.{h.name}" for h in s.hosts)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", Selector(None)),
        (" * ", Selector(None)),
        ("janitor.managed", Selector("janitor.managed")),
        ("janitor.managed=true", Selector("janitor.managed", "true")),
        ("team=ide", Selector("team", "ide")),
        ("com.example/team=ide x", Selector("com.example/team", "ide x")),
    ],
)
def test_selector_forms(monkeypatch: pytest.MonkeyPatch, text: str, expected: Selector) -> None:
    s = load(monkeypatch, JANITOR_SELECTOR=text)
    assert s.selector == expected
    assert s.selector.matches_everything is (expected.key is None)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://localhost",
        "redis://redis:6379",
        "redis://:s3cret@redis:6379/1",
        "redis://user:s3cret@[::1]:6379/0",
        "rediss://redis.example.com:6380/0",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_forms(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    s = load(monkeypatch, JANITOR_REDIS_URL=url)
    assert s.redis_url == url
    assert "s3cret" not in s.redis_url_redacted


@pytest.mark.parametrize(
    ("variable", "text", "attribute", "expected"),
    [
        ("JANITOR_CONCURRENCY", "1", "concurrency", 1),
        ("JANITOR_CONCURRENCY", "64", "concurrency", 64),
        ("JANITOR_MAX_ACTIONS", "1", "max_actions", 1),
        ("JANITOR_MAX_ACTIONS", "100000", "max_actions", 100000),
        ("JANITOR_METRICS_PORT", "9100", "metrics_port", 9100),
        ("JANITOR_METRICS_PORT", "65535", "metrics_port", 65535),
        ("JANITOR_LOG_FORMAT", "console", "log_format", "console"),
        ("JANITOR_LOG_FORMAT", "JSON", "log_format", "json"),
        ("JANITOR_LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("JANITOR_LOG_LEVEL", "WARNING", "log_level", "WARNING"),
        ("JANITOR_LOG_LEVEL", "error", "log_level", "ERROR"),
    ],
)
def test_scalar_forms(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, attribute: str, expected: object
) -> None:
    assert getattr(load(monkeypatch, **{variable: text}), attribute) == expected


# --- refusals: one line naming the variable, the value and what is accepted --------------------

BAD_DURATIONS = ["banana", "", "-5", "5 m", "1e9", "inf", "2x", "PT", "P1DT"]


@pytest.mark.parametrize("variable", DURATION_VARS)
@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_bad_durations(monkeypatch: pytest.MonkeyPatch, variable: str, text: str) -> None:
    message = refused(monkeypatch, **{variable: text})
    assert_names(message, variable, text, "90s, 30m, 2h, 7d")
    assert "PT2H" in message


@pytest.mark.parametrize("variable", DURATION_VARS)
def test_durations_over_ten_years(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    message = refused(monkeypatch, **{variable: "3651d"})
    assert_names(message, variable, "3651d", "longer than 3650 days")


@pytest.mark.parametrize(
    ("variable", "text", "accepted"),
    [
        ("JANITOR_MAX_RUNTIME", "0s", "longer than 0s"),
        ("JANITOR_STOPPED_GRACE", "0", "longer than 0s"),
        ("JANITOR_CREATED_GRACE", "PT0S", "longer than 0s"),
        ("JANITOR_KILL_INTERVAL", "0.5s", "at least 1s"),
        ("JANITOR_REMOVE_INTERVAL", "0s", "at least 1s"),
        ("JANITOR_DOCKER_TIMEOUT", "0.1", "at least 1s"),
    ],
)
def test_durations_too_short(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, accepted: str
) -> None:
    assert_names(refused(monkeypatch, **{variable: text}), variable, text, accepted)


HOST_NAME_RULE = "[a-z0-9][a-z0-9-]*"
BAD_HOSTS = [
    pytest.param("local", "name=url", id="missing-equals"),
    pytest.param("Alpha=unix:///x", HOST_NAME_RULE, id="upper-case-name"),
    pytest.param("-x=unix:///x", HOST_NAME_RULE, id="leading-dash"),
    pytest.param("a_b=unix:///x", HOST_NAME_RULE, id="underscore"),
    pytest.param("=unix:///x", HOST_NAME_RULE, id="empty-name"),
    pytest.param("a=unix:///x,a=unix:///y", "used twice", id="duplicate"),
    pytest.param("a=http://x:2375", "must start with unix:// or tcp://", id="http-scheme"),
    pytest.param("a=", "must start with unix:// or tcp://", id="empty-url"),
    pytest.param("a=unix://var/run/docker.sock", "unix:///absolute/path", id="unix-relative"),
    pytest.param("a=unix:///", "unix:///absolute/path", id="unix-root"),
    pytest.param("a=tcp://docker", "tcp://host:port", id="tcp-no-port"),
    pytest.param("a=tcp://:2375", "tcp://host:port", id="tcp-no-host"),
    pytest.param("a=tcp://docker:0", "tcp://host:port", id="tcp-port-0"),
    pytest.param("a=tcp://docker:99999", "tcp://host:port", id="tcp-port-too-big"),
    pytest.param("a=tcp://docker:x", "tcp://host:port", id="tcp-port-not-a-number"),
    pytest.param("a=tcp://docker:2375/v1.41", "tcp://host:port", id="tcp-path"),
    pytest.param("a=tcp://u:p@docker:2375", "tcp://host:port", id="tcp-userinfo"),
    pytest.param("a=tcp://docker:2375?x=1", "tcp://host:port", id="tcp-query"),
    pytest.param("a=tcp://dock er:2375", "tcp://host:port", id="tcp-space-in-host"),
    pytest.param("a=tcp://[::1:2375", "tcp://host:port", id="tcp-broken-ipv6"),
    pytest.param("", "name=unix:///path", id="empty"),
    pytest.param(" , ", "name=unix:///path", id="only-commas"),
    pytest.param("a=unix:///x,", "empty entry", id="trailing-comma"),
]


@pytest.mark.parametrize(("text", "accepted"), BAD_HOSTS)
def test_bad_hosts(monkeypatch: pytest.MonkeyPatch, text: str, accepted: str) -> None:
    message = refused(monkeypatch, JANITOR_HOSTS=text, JANITOR_ALLOW_INSECURE_TCP="true")
    assert_names(message, "JANITOR_HOSTS", text, accepted)


@pytest.mark.parametrize(
    ("variable", "text", "accepted"),
    [
        ("JANITOR_CONCURRENCY", "0", "greater than or equal to 1"),
        ("JANITOR_CONCURRENCY", "65", "less than or equal to 64"),
        ("JANITOR_CONCURRENCY", "abc", "valid integer"),
        ("JANITOR_CONCURRENCY", "1.5", "valid integer"),
        ("JANITOR_CONCURRENCY", "", "valid integer"),
        ("JANITOR_MAX_ACTIONS", "0", "greater than or equal to 1"),
        ("JANITOR_MAX_ACTIONS", "-1", "greater than or equal to 1"),
        ("JANITOR_METRICS_PORT", "70000", "less than or equal to 65535"),
        ("JANITOR_METRICS_PORT", "-1", "greater than or equal to 0"),
        ("JANITOR_LOG_FORMAT", "xml", "'json' or 'console'"),
        ("JANITOR_LOG_LEVEL", "verbose", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("JANITOR_SELECTOR", "", "key=value, or *"),
        ("JANITOR_SELECTOR", "a=b,c", "key=value, or *"),
        ("JANITOR_SELECTOR", "a=", "key=value, or *"),
        ("JANITOR_SELECTOR", "=b", "key=value, or *"),
        ("JANITOR_SELECTOR", "a b", "key=value, or *"),
        ("JANITOR_SELECTOR", "abc\n=1", "key=value, or *"),
        ("JANITOR_SELECTOR", "**", "key=value, or *"),
        ("JANITOR_REDIS_URL", "http://x", "redis://"),
        ("JANITOR_REDIS_URL", "", "redis://"),
        ("JANITOR_REDIS_URL", "localhost:6379", "redis://"),
        ("JANITOR_REDIS_URL", "redis://", "redis://"),
        ("JANITOR_REDIS_URL", "redis://[::1", "redis://"),
        ("JANITOR_REDIS_URL", "redis://host:port/0", "redis://"),
        ("JANITOR_REDIS_URL", "redis://host:6379/zero", "redis://"),
        ("JANITOR_REDIS_URL", "unix://relative.sock", "unix:///path"),
    ]
    + [(variable, "banana", "true/false") for variable in BOOL_VARS],
)
def test_bad_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, accepted: str
) -> None:
    assert_names(refused(monkeypatch, **{variable: text}), variable, text, accepted)


def test_several_bad_variables_still_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        JANITOR_MAX_RUNTIME="banana",
        JANITOR_CONCURRENCY="0",
        JANITOR_HOSTS="Alpha=unix:///x",
    )
    for variable in ("JANITOR_MAX_RUNTIME", "JANITOR_CONCURRENCY", "JANITOR_HOSTS"):
        assert variable in message


# --- tcp and TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["tcp://127.0.0.1:2375", "tcp://localhost:2375", "tcp://[::1]:2375", "tcp://127.1.2.3:1"]
)
def test_insecure_tcp_only_for_loopback_with_the_flag(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = refused(monkeypatch, JANITOR_HOSTS=f"a={url}")
    assert "JANITOR_HOSTS" in message
    assert "JANITOR_TLS_CA_CERT" in message
    assert "JANITOR_ALLOW_INSECURE_TCP=true" in message
    s = load(monkeypatch, JANITOR_ALLOW_INSECURE_TCP="true")
    assert s.hosts[0].url == url
    assert s.host("a").tls is None


@pytest.mark.parametrize(
    "url", ["tcp://10.0.0.1:2375", "tcp://docker.example.com:2376", "tcp://0.0.0.0:2375"]
)
def test_insecure_tcp_refused_for_other_hosts_even_with_the_flag(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    message = refused(monkeypatch, JANITOR_HOSTS=f"a={url}", JANITOR_ALLOW_INSECURE_TCP="true")
    assert f"a={url}" in message
    assert "tcp without TLS" in message
    assert "loopback" in message


def test_insecure_flag_does_not_matter_for_unix(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, JANITOR_HOSTS="a=unix:///x.sock", JANITOR_ALLOW_INSECURE_TCP="true")
    assert s.host("a") == HostConfig("a", "unix:///x.sock")


def test_tls_attached_to_tcp_hosts_only(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, str]
) -> None:
    s = load(
        monkeypatch,
        JANITOR_HOSTS="remote=tcp://10.0.0.1:2376,local=unix:///var/run/docker.sock",
        JANITOR_TLS_CA_CERT=pem["ca.pem"],
        JANITOR_TLS_CLIENT_CERT=pem["cert.pem"],
        JANITOR_TLS_CLIENT_KEY=pem["key.pem"],
    )
    tls = TLSConfig(Path(pem["ca.pem"]), Path(pem["cert.pem"]), Path(pem["key.pem"]))
    assert s.tls == tls
    assert s.host("remote") == HostConfig("remote", "tcp://10.0.0.1:2376", tls)
    assert s.host("local").tls is None


def test_tls_with_a_ca_only(monkeypatch: pytest.MonkeyPatch, pem: dict[str, str]) -> None:
    s = load(monkeypatch, JANITOR_HOSTS="r=tcp://10.0.0.1:2376", JANITOR_TLS_CA_CERT=pem["ca.pem"])
    assert s.host("r").tls == TLSConfig(Path(pem["ca.pem"]), None, None)


@pytest.mark.parametrize(
    "variable", ["JANITOR_TLS_CA_CERT", "JANITOR_TLS_CLIENT_CERT", "JANITOR_TLS_CLIENT_KEY"]
)
@pytest.mark.parametrize("missing", ["/nonexistent/file.pem", "", "/"])
def test_tls_file_must_exist(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, str], variable: str, missing: str
) -> None:
    variables = {
        "JANITOR_HOSTS": "r=tcp://10.0.0.1:2376",
        "JANITOR_TLS_CA_CERT": pem["ca.pem"],
        "JANITOR_TLS_CLIENT_CERT": pem["cert.pem"],
        "JANITOR_TLS_CLIENT_KEY": pem["key.pem"],
        variable: missing,
    }
    message = refused(monkeypatch, **variables)
    assert variable in message
    assert "no readable file" in message


def test_tls_directory_is_not_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = refused(monkeypatch, JANITOR_TLS_CA_CERT=str(tmp_path))
    assert f"JANITOR_TLS_CA_CERT={str(tmp_path)!r}" in message


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (["ca.pem", "cert.pem"], ["JANITOR_TLS_CLIENT_CERT", "JANITOR_TLS_CLIENT_KEY"]),
        (["ca.pem", "key.pem"], ["JANITOR_TLS_CLIENT_CERT", "JANITOR_TLS_CLIENT_KEY"]),
        (["cert.pem", "key.pem"], ["JANITOR_TLS_CA_CERT"]),
    ],
)
def test_tls_incomplete(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, str], given: list[str], names: list[str]
) -> None:
    variable = {
        "ca.pem": "JANITOR_TLS_CA_CERT",
        "cert.pem": "JANITOR_TLS_CLIENT_CERT",
        "key.pem": "JANITOR_TLS_CLIENT_KEY",
    }
    message = refused(
        monkeypatch,
        JANITOR_HOSTS="r=tcp://10.0.0.1:2376",
        **{variable[name]: pem[name] for name in given},
    )
    for name in names:
        assert name in message


# --- intervals against the timeouts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "names"),
    [
        (
            {"JANITOR_KILL_INTERVAL": "10s"},
            ["JANITOR_KILL_INTERVAL=10s", "JANITOR_DOCKER_TIMEOUT", "JANITOR_STOP_TIMEOUT"],
        ),
        (
            {"JANITOR_KILL_INTERVAL": "18s"},  # soft limit 14.4s, calls 10s + 5s
            ["JANITOR_KILL_INTERVAL=18s", "JANITOR_DOCKER_TIMEOUT", "JANITOR_STOP_TIMEOUT"],
        ),
        (
            {"JANITOR_STOP_TIMEOUT": "1h"},
            ["JANITOR_KILL_INTERVAL=1m", "JANITOR_DOCKER_TIMEOUT", "JANITOR_STOP_TIMEOUT"],
        ),
        (
            {"JANITOR_REMOVE_INTERVAL": "10s"},
            ["JANITOR_REMOVE_INTERVAL=10s", "JANITOR_DOCKER_TIMEOUT"],
        ),
        (
            {"JANITOR_DOCKER_TIMEOUT": "5m", "JANITOR_KILL_INTERVAL": "1h"},
            ["JANITOR_REMOVE_INTERVAL=5m", "JANITOR_DOCKER_TIMEOUT"],
        ),
    ],
)
def test_interval_too_short_for_the_timeouts(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], names: list[str]
) -> None:
    message = refused(monkeypatch, **variables)
    for name in names:
        assert name in message
    assert "lengthen the interval or shorten the timeouts" in message


def test_remove_interval_ignores_the_stop_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, JANITOR_REMOVE_INTERVAL="10s")
    assert "JANITOR_STOP_TIMEOUT" not in message


def test_interval_just_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, JANITOR_KILL_INTERVAL="19s", JANITOR_REMOVE_INTERVAL="13s")
    assert s.kill_interval == timedelta(seconds=19)
    assert s.remove_interval == timedelta(seconds=13)


# --- secrets -------------------------------------------------------------------------------------


def test_redis_password_not_in_another_variables_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(
        monkeypatch,
        JANITOR_REDIS_URL="redis://:s3cret@host:6379/0",
        JANITOR_MAX_RUNTIME="banana",
    )
    assert "JANITOR_MAX_RUNTIME" in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@host:6379/0",
        "redis://:s3cret@host:abc/0",
        "redis://:s3cret@host:99999/0",
        "redis://:s3/cret@host:6379/0",
        "redis://:s3?cret@host:6379/0",
        "redis://:s3#cret@host:6379/0",
        "redis://:123/s3cret@host:6379/0",
        "redis://:s3cret@[::1/0",
        "redis://user:s3cret@host/x",
    ],
)
def test_redis_password_not_in_its_own_error(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    message = refused(monkeypatch, JANITOR_REDIS_URL=url, JANITOR_CONCURRENCY="0")
    assert "JANITOR_REDIS_URL" in message
    assert "JANITOR_CONCURRENCY" in message
    for fragment in ("s3cret", "s3/cret", "cret"):
        assert fragment not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:s3cret@host:6379/0", "redis://user:***@host:6379/0"),
        ("rediss://:s3cret@host/0", "rediss://:***@host/0"),
        ("redis://:s3cret@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://:s3/c@ret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://:s3cret@host:abc/0", "redis://:***@host:abc/0"),
        ("unix://:s3cret@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://host:6379/0?password=s3cret&x=1", "redis://host:6379/0?password=***&x=1"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("redis://[x", "redis://[x"),
        ("", ""),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


PASSWORD_TAIL = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"))


@settings(max_examples=200)
@given(
    st.sampled_from(["redis", "rediss", "unix", "http"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~", max_size=8),
    PASSWORD_TAIL,
    st.sampled_from(["host:6379/0", "[::1]:6379", "h", "/run/r.sock", "host:abc/0", "h/0?x=1"]),
)
def test_redact_url_never_shows_a_password(
    scheme: str, user: str, password_tail: str, rest: str
) -> None:
    password = "Pw" + password_tail
    redacted = redact_url(f"{scheme}://{user}:{password}@{rest}")
    assert password not in redacted


@settings(max_examples=200, deadline=None)
@given(PASSWORD_TAIL, st.sampled_from(["host:6379/0", "host:abc/0", "[::1", "h/0", ""]))
def test_config_error_never_shows_the_redis_password(password_tail: str, rest: str) -> None:
    password = "Pw" + password_tail
    url = f"redis://:{password}@{rest}"
    variables = {"JANITOR_REDIS_URL": url, "JANITOR_CONCURRENCY": "0"}
    with mock.patch.dict(os.environ, variables), pytest.raises(ConfigError) as info:
        load_settings()
    assert_one_line(str(info.value))
    assert password not in str(info.value)
    assert repr(password)[1:-1] not in str(info.value)


# --- Settings.host and friends -------------------------------------------------------------------


def test_host_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, JANITOR_HOSTS="a=unix:///a.sock,b=unix:///b.sock")
    assert s.host("b") == HostConfig("b", "unix:///b.sock")
    assert s.host("b").queue == "janitor.b"
    assert not s.host("b").is_tcp


@pytest.mark.parametrize("name", ["c", "", "A", "a ", "local"])
def test_unknown_host(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    s = load(monkeypatch, JANITOR_HOSTS="a=unix:///a.sock,b=unix:///b.sock")
    with pytest.raises(UnknownHostError) as info:
        s.host(name)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert_one_line(message)
    assert repr(name) in message
    assert "JANITOR_HOSTS" in message
    assert "a, b" in message


def test_rules_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(
        monkeypatch,
        JANITOR_SELECTOR="team=ide",
        JANITOR_MAX_RUNTIME="3h",
        JANITOR_STOPPED_GRACE="1m",
        JANITOR_CREATED_GRACE="2h",
    )
    own = frozenset({"f" * 64})
    assert s.rules(own_container_ids=own, own_compose_projects=frozenset({"janitor"})) == Rules(
        selector=Selector("team", "ide"),
        max_runtime=timedelta(hours=3),
        stopped_grace=timedelta(minutes=1),
        created_grace=timedelta(hours=2),
        own_container_ids=own,
        own_compose_projects=frozenset({"janitor"}),
    )


def test_interval_by_task_name(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load(monkeypatch, JANITOR_KILL_INTERVAL="2m", JANITOR_REMOVE_INTERVAL="7m")
    assert s.interval("kill-ghosts") == timedelta(minutes=2)
    assert s.interval("remove-stopped") == timedelta(minutes=7)


def test_durations_serialize_in_the_accepted_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    dumped = load(monkeypatch, JANITOR_MAX_RUNTIME="1234567s").model_dump()
    assert dumped["max_runtime"] == "1234567s"
    assert dumped["stopped_grace"] == "10m"
    assert dumped["kill_interval"] == "1m"


def test_load_settings_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, {"JANITOR_DRY_RUN": "false"})
    assert load_settings(dry_run=True).dry_run is True


# --- fuzz ----------------------------------------------------------------------------------------

ENV_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


def check_hosts(text: str) -> None:
    try:
        hosts = parse_hosts(text)
    except ValueError:
        return
    assert isinstance(hosts, tuple)
    assert hosts
    names = [host.name for host in hosts]
    assert len(set(names)) == len(names)
    for host in hosts:
        assert isinstance(host, HostConfig)
        assert host.tls is None
        assert host.name.isascii()
        assert host.name[0].isalnum()
        assert set(host.name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert host.url.startswith(("unix:///", "tcp://"))


@settings(max_examples=300)
@given(st.text())
@example("a=tcp://[::1")
@example("a=tcp://h:1\n")
@example("a\n=unix:///x")
def test_parse_hosts_fuzz_any_text(text: str) -> None:
    check_hosts(text)


HOST_NAMES = st.one_of(
    st.sampled_from(["a", "b", "local", "x-1", "A", "-x", "", "a b", "a\n"]),
    st.text(alphabet="abz09-_A \n", max_size=4),
)
HOST_URLS = st.tuples(
    st.sampled_from(["unix://", "unix:///", "tcp://", "http://", ""]),
    st.text(alphabet="abc/:.[]@?#%0129 \t\u0085", max_size=12),
).map("".join)


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(HOST_NAMES, st.sampled_from(["=", "", "=="]), HOST_URLS).map("".join),
        min_size=1,
        max_size=4,
    ).map(",".join)
)
def test_parse_hosts_fuzz_structured(text: str) -> None:
    check_hosts(text)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(CONTRACT_VARS)), ENV_TEXT, max_size=3))
def test_load_settings_fuzz(variables: dict[str, str]) -> None:
    # Whatever the environment holds: settings, or one ConfigError line; never anything else.
    with mock.patch.dict(os.environ, variables):
        try:
            s = load_settings()
        except ConfigError as error:
            assert_one_line(str(error))
            return
    assert isinstance(s, Settings)
