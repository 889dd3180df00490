"""The unused prune against a real private dockerd and Redis: images (imported, committed,
tagged twice, untagged), volumes and networks; the disk budget; dry run; cap; races."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from support.cli import janitor_env, run_janitor, sweep_json

from janitor import kinds_unused, pacing, pressure, unused
from janitor.model import Task
from janitor.settings import Settings
from janitor.tick import open_tick, sweep_host
from sandbox.daemons import Engine
from sandbox.image import IMAGE, ensure_test_image

MANAGED = {"janitor.managed": "true"}
GRACE = 2.0  # seconds; the first sweep records "first seen unused", the second acts


def plant_image(
    api: docker.APIClient, tag: str | None, labels: Mapping[str, str], size: int = 64
) -> str:
    """An image made with `docker import --change 'LABEL ...'` (one file, no shell); its id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = tag.encode() if tag else b"untagged"
        data = (data * (size // len(data) + 1))[:size]
        member = tarfile.TarInfo("payload")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    repository, _, version = (tag or "").partition(":")
    answer = api.import_image_from_data(
        buffer.getvalue(),
        repository=repository or None,
        tag=version or None,
        changes=[f"LABEL {k}={v}" for k, v in labels.items()],
    )
    # The import answers JSON lines; the last one's status is the new image's id.
    return str(json.loads(answer.strip().splitlines()[-1])["status"])


def runnable_image(api: docker.APIClient, tag: str | None, labels: Mapping[str, str]) -> str:
    """An image made with `docker commit --change 'LABEL ...'` of a test container."""
    no_network = api.create_host_config(network_mode="none")
    donor = api.create_container(IMAGE, "true", host_config=no_network)
    repository, _, version = (tag or "").partition(":")
    changes = [f"LABEL {k}={v}" for k, v in labels.items()]
    committed = api.commit(
        donor["Id"], repository=repository or None, tag=version or None, changes=changes
    )
    api.remove_container(donor["Id"])
    return str(committed["Id"])


def use(
    api: docker.APIClient,
    image: str,
    *,
    start: bool = False,
    network_name: str = "none",
    volume: str | None = None,
) -> str:
    """A container (unlabelled: whatever the selector, its references count) of `image`."""
    binds = {volume: {"bind": "/data", "mode": "rw"}} if volume else None
    host_config = api.create_host_config(network_mode=network_name, binds=binds)
    created = api.create_container(image, ["sleep", "0.1"], host_config=host_config)
    if start:
        api.start(created["Id"])
        api.wait(created["Id"], timeout=30)
    return str(created["Id"])


def network(api: docker.APIClient, name: str, labels: Mapping[str, str]) -> str:
    # Internal: no route out, and with --iptables=false nothing on the machine's rules.
    answer: dict[str, Any] = api.create_network(
        name, driver="bridge", internal=True, labels=dict(labels)
    )
    return str(answer["Id"])


def images(api: docker.APIClient) -> set[str]:
    return {i["Id"] for i in api.images()}


@pytest.fixture
def host(alpha: Engine) -> Iterator[Engine]:
    """alpha, with the images and networks a test made gone afterwards."""
    yield alpha
    api = alpha.api()
    for container in api.containers(all=True):
        api.remove_container(container["Id"], force=True, v=True)
    for image in api.images():
        if IMAGE not in (image["RepoTags"] or []):
            api.remove_image(image["Id"], force=True)
    for net in api.networks():
        if net["Name"] not in unused.PREDEFINED_NETWORKS:
            api.remove_network(net["Id"])
    for volume in api.volumes()["Volumes"] or []:
        api.remove_volume(volume["Name"], force=True)
    ensure_test_image(api)  # a failed test may have pruned it


def prune(engine: Engine, redis_url: str | None, **overrides: Any) -> dict[str, Any]:
    settings = Settings(
        hosts=f"alpha={engine.url}",  # type: ignore[arg-type]
        unused_grace=f"{GRACE}s",  # type: ignore[arg-type]
        **overrides,
    )
    client = redis.Redis.from_url(redis_url) if redis_url else None
    try:
        report = sweep_host(settings, "alpha", Task.PRUNE_UNUSED, redis_client=client)
    finally:
        if client is not None:
            client.close()
    return report.to_dict()


def twice(engine: Engine, redis_url: str, **overrides: Any) -> dict[str, Any]:
    """The first sweep sees everything unused for the first time; the second, past the grace."""
    first = prune(engine, redis_url, **overrides)
    assert first["status"] == "ok", first
    assert [a for a in first["actions"] if a["outcome"] != "refused"] == []
    time.sleep(GRACE + 0.5)
    return prune(engine, redis_url, **overrides)


def acted(report: Mapping[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {a["id"]: (a["action"], a["reason"], a["outcome"]) for a in report["actions"]}


def test_unused_past_grace_removed_and_every_kind_of_user_keeps_its_image(
    host: Engine, redis_url: str
) -> None:
    api = host.api()
    lone = plant_image(api, "lone:1", MANAGED)
    twin = plant_image(api, "twin:1", MANAGED)
    api.tag(twin, "twin", "2")  # a second tag of the same image
    loose = plant_image(api, None, MANAGED)  # untagged
    for_running = runnable_image(api, "run:1", MANAGED)
    for_exited = runnable_image(api, "exit:1", MANAGED)
    for_created = plant_image(api, "made:1", MANAGED)
    protected = plant_image(api, "keep:1", {**MANAGED, "janitor.protect": "true"})
    unmanaged = plant_image(api, "theirs:1", {"team": "ide"})
    committed = runnable_image(api, None, MANAGED)  # untagged: its arrival is the first sight
    use(api, for_running, start=True)
    use(api, for_exited, start=True)
    use(api, for_created)

    report = twice(host, redis_url)

    removed = {lone, twin, loose, committed}
    assert acted(report) == {i: ("remove-image", "unused_past_grace", "done") for i in removed}
    left = images(api)
    assert not removed & left
    assert {for_running, for_exited, for_created, protected, unmanaged} <= left


def test_volumes_and_networks_past_grace_removed_unless_referred_to(
    host: Engine, redis_url: str
) -> None:
    api = host.api()
    api.create_volume("dangling", labels=MANAGED)
    api.create_volume("mounted", labels=MANAGED)
    api.create_volume("named")  # no label: never in scope
    spare = network(api, "spare", MANAGED)
    joined = network(api, "joined", MANAGED)
    use(api, IMAGE, start=True, volume="mounted")
    # Created, never started: no endpoint, and the daemon would let the network go.
    use(api, IMAGE, network_name="joined")

    report = twice(host, redis_url)

    assert acted(report) == {
        "dangling": ("remove-volume", "unused_past_grace", "done"),
        spare: ("remove-network", "unused_past_grace", "done"),
    }
    assert {v["Name"] for v in api.volumes()["Volumes"]} >= {"mounted", "named"}
    assert joined in {n["Id"] for n in api.networks()}


def test_a_star_selector_never_reaches_volumes(host: Engine, redis_url: str) -> None:
    api = host.api()
    api.create_volume("data", labels=MANAGED)
    image = plant_image(api, "any:1", {})
    use(api, IMAGE)  # `*` reaches every image: the test image stays in use
    report = twice(host, redis_url, selector="*")
    assert acted(report) == {image: ("remove-image", "unused_past_grace", "done")}
    assert "data" in {v["Name"] for v in api.volumes()["Volumes"]}


def test_without_redis_nothing_is_pruned(host: Engine) -> None:
    api = host.api()
    image = plant_image(api, "old:1", MANAGED)
    time.sleep(GRACE + 0.5)
    report = prune(host, None)
    assert report["status"] == "ok"
    assert report["actions"] == []
    assert image in images(api)


def test_disk_budget_removes_least_recently_used_first_and_stops_at_it(
    host: Engine, redis_url: str
) -> None:
    api = host.api()
    size = 100_000
    oldest = plant_image(api, "lru:1", MANAGED, size)
    time.sleep(1.1)  # arrivals (last tag) a second apart
    middle = plant_image(api, "lru:2", MANAGED, size)
    time.sleep(1.1)
    newest = plant_image(api, "lru:3", MANAGED, size)
    sized = {i["Id"]: i["Size"] for i in api.images()}
    total = sized[oldest] + sized[middle] + sized[newest]
    budget = str(total - sized[oldest] // 2)  # one removal brings it under
    rules: dict[str, Any] = {
        "unused_grace": "1h",
        "image_min_age": "1s",
        "image_disk_budget": budget,
    }
    settings = Settings(hosts=f"alpha={host.url}", **rules)  # type: ignore[arg-type]
    client = redis.Redis.from_url(redis_url)
    sweep_host(settings, "alpha", Task.PRUNE_UNUSED, redis_client=client)
    time.sleep(1.5)
    report = sweep_host(settings, "alpha", Task.PRUNE_UNUSED, redis_client=client).to_dict()
    client.close()

    assert acted(report) == {oldest: ("remove-image", "over_disk_budget", "done")}
    assert {middle, newest} <= images(api)


def test_dry_run_changes_nothing_and_the_cap_counts_every_kind(
    host: Engine, redis_url: str
) -> None:
    api = host.api()
    image = plant_image(api, "dry:1", MANAGED)
    api.create_volume("dry", labels=MANAGED)
    net = network(api, "dry", MANAGED)

    # A dry run only reads the first-seen record: a real sweep must have written it.
    prune(host, redis_url)
    time.sleep(GRACE + 0.5)
    planned = prune(host, redis_url, dry_run="true")
    assert {a["outcome"] for a in planned["actions"]} == {"planned"}
    assert set(acted(planned)) == {image, "dry", net}

    capped = prune(host, redis_url, max_actions="2")
    assert capped["status"] == "aborted"
    assert {a["detail"] for a in capped["actions"]} == {"over_max_actions"}
    assert image in images(api)
    assert "dry" in {v["Name"] for v in api.volumes()["Volumes"]}
    assert net in {n["Id"] for n in api.networks()}


def test_an_image_used_between_decision_and_act_is_refused(
    host: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = host.api()
    raced = plant_image(api, "race:1", MANAGED)
    prune(host, redis_url)
    time.sleep(GRACE + 0.5)
    decide = kinds_unused.UnusedKind.decide

    def decide_then_use(self: kinds_unused.UnusedKind, *args: Any) -> Any:
        actions = decide(self, *args)
        use(api, raced)  # someone starts using it right after the decision
        return actions

    monkeypatch.setattr(kinds_unused.UnusedKind, "decide", decide_then_use)
    report = prune(host, redis_url)
    [action] = report["actions"]
    assert (action["id"], action["outcome"]) == (raced, "refused")
    assert action["detail"] == "in_use_since_decision"
    assert raced in images(api)

    # Blind the janitor to that user, decision and re-check alike: the daemon refuses (409),
    # since the removal is never forced.
    monkeypatch.setattr(kinds_unused.UnusedKind, "decide", decide)
    monkeypatch.setattr(unused.Usage, "holds", lambda *_: False)
    time.sleep(GRACE + 0.5)  # the user's creation was a use: let the grace pass again
    forced = prune(host, redis_url)
    [action] = forced["actions"]
    assert action["outcome"] == "refused"
    assert "being used" in action["detail"] or "conflict" in action["detail"]
    assert raced in images(api)


def test_the_cli_runs_the_prune_only_when_asked_or_turned_on(host: Engine, redis_url: str) -> None:
    plant_image(host.api(), "cli:1", MANAGED)
    env = janitor_env({"alpha": host.url}, redis_url, unused_grace="1h")
    every = sweep_json(env, "--task", "all")
    assert {r["task"] for r in every.reports} == {"kill-ghosts", "remove-stopped"}
    on = sweep_json({**env, "JANITOR_PRUNE_INTERVAL": "10m"}, "--task", "all")
    assert {r["task"] for r in on.reports} == {"kill-ghosts", "remove-stopped", "prune-unused"}
    asked = sweep_json(env, "--task", "prune-unused")
    assert asked.code == 0
    assert [r["task"] for r in asked.reports] == ["prune-unused"]


@pytest.fixture
def small_root(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs standing in for a Docker root filesystem, 90% full."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root)], check=True)
    try:
        (root / "filler").write_bytes(b"\0" * int(4 * 1024 * 1024 * 0.9))
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_a_full_docker_root_is_pressure_and_a_percentage_budget_measures_it(
    host: Engine, redis_url: str, small_root: Path
) -> None:
    api = host.api()
    image = plant_image(api, "share:1", MANAGED, size=200_000)
    settings = Settings(
        hosts=f"alpha={host.url}",  # type: ignore[arg-type]
        docker_root=small_root,
        pressure_high=0.8,
        unused_grace="1h",  # type: ignore[arg-type]
        image_min_age="1s",  # type: ignore[arg-type]
        image_disk_budget="1%",  # type: ignore[arg-type]
    )
    client = redis.Redis.from_url(redis_url)
    try:
        with open_tick(settings, "alpha", Task.KILL_GHOSTS, client) as kill_tick:
            assert pacing.check_pressure(kill_tick, client), "90% of the blocks is over 0.8"
        sweep_host(settings, "alpha", Task.PRUNE_UNUSED, redis_client=client)
        time.sleep(1.5)
        report = sweep_host(settings, "alpha", Task.PRUNE_UNUSED, redis_client=client).to_dict()
    finally:
        client.close()
    # 1% of 4 MiB is about 42 KB: the test image (in use: no) and the planted one are over it.
    assert acted(report)[image] == ("remove-image", "over_disk_budget", "done")


def test_a_percentage_budget_without_a_visible_root_fails_the_prune_with_a_reason(
    host: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where this worker sees no Docker root (a worker in a container without the mount).
    monkeypatch.setattr(pressure, "docker_root", lambda *_: None)
    report = prune(host, redis_url, image_disk_budget="80%")
    assert report["status"] == "failed"
    assert "JANITOR_DOCKER_ROOT" in report["error"]


def test_check_measures_a_percentage_budget_and_a_tcp_host_cannot_have_one(
    host: Engine, redis_url: str
) -> None:
    env = janitor_env({"alpha": host.url}, redis_url, image_disk_budget="80%")
    seen = run_janitor(["check"], env)
    assert seen.code == 0, seen.stdout + seen.stderr
    [line] = [line for line in seen.stdout.splitlines() if "docker root of alpha" in line]
    assert line.startswith("ok")
    assert "image budget" in line
    remote = janitor_env(
        {"far": "tcp://127.0.0.1:2375"},
        redis_url,
        image_disk_budget="80%",
        allow_insecure_tcp="true",
    )
    refused = run_janitor(["check"], remote)
    assert refused.code == 2
    assert "JANITOR_DOCKER_ROOT" in refused.stdout + refused.stderr


def test_a_tag_moved_to_another_image_after_the_re_check_stays_with_that_image(
    host: Engine, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = host.api()
    twin = plant_image(api, "moved:1", MANAGED)
    api.tag(twin, "moved", "2")
    other = plant_image(api, "other:1", {})  # not in scope: the tag must stay on it
    prune(host, redis_url)
    time.sleep(GRACE + 0.5)
    why_not = kinds_unused.UnusedKind.why_not

    def re_check_then_pull(self: kinds_unused.UnusedKind, *args: Any) -> Any:
        verdict = why_not(self, *args)
        api.tag(other, "moved", "2")  # a pull of moved:2 lands right after the re-check
        return verdict

    monkeypatch.setattr(kinds_unused.UnusedKind, "why_not", re_check_then_pull)
    report = prune(host, redis_url)
    assert acted(report) == {twin: ("remove-image", "unused_past_grace", "done")}
    assert api.inspect_image("moved:2")["Id"] == other
