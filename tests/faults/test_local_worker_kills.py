"""SIGKILL of the worker while a local-process set upgrades (SPEC 8): its steps — stop, OS
directory, extensions, start — are carried out again by the next worker, and nothing is done
twice: each instance boots exactly once more (its data directory's boots.log says so), runs
exactly one process, of the new version, and keeps its data."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet import clock
from fleet.drivers.local import driver as local
from fleet.drivers.local import images
from fleet.models import HealthState, Instance, InstanceProcess, ScaleSet
from tests import factories
from tests.faults.conftest import events_of, finished, is_over, progressed_after, seeds, wait_seconds
from tests.processes import Processes, wait_for
from upgrades import services
from upgrades.models import RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

APP = {"image_publisher": "Contoso", "image_offer": "DemoApp", "image_sku": "app"}
APP_HEALTH = {**factories.APP_HEALTH_HTTP, "settings": {"protocol": "http", "port": 8080, "requestPath": "/health"}}
# Six instances, one per batch at most three batches' worth of events before the end.
EVENT_POINTS = range(1, 12)


def key(version: str) -> str:
    return f"platform:Contoso/DemoApp/app:{version}"


@pytest.fixture
def local_processes(start_processes, tmp_path: Path, settings) -> Iterator[Processes]:  # type: ignore[no-untyped-def]
    directories = {"LOCAL_IMAGE_STORE": tmp_path / "images", "LOCAL_INSTANCE_ROOT": tmp_path / "instances"}
    for name, value in directories.items():
        setattr(settings, name, value)
    processes = start_processes(LOCAL_STEP_LEASE_SECONDS="2", **{k: str(v) for k, v in directories.items()})
    try:
        yield processes
    finally:
        local.stop_all()
        local.stop_processes(local.orphan_processes())


def healthy_on(scale_set: ScaleSet, version: str) -> bool:
    rows = list(scale_set.instances.select_related("scale_set"))
    return all(
        r.health_state == HealthState.HEALTHY
        and r.os_image == key(version)
        and r.driver_due_at is None
        and InstanceProcess.objects.filter(instance=r, pid__isnull=False).exists()
        for r in rows
    )


def answers(instance: Instance) -> dict[str, str]:
    port = InstanceProcess.objects.get(instance=instance).port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as response:
        return dict(json.load(response))


@pytest.mark.parametrize("seed", seeds(full=5, reduced=1))
def test_worker_killed_mid_upgrade_of_real_processes_loses_nothing_and_doubles_nothing(
    seed: int, local_processes: Processes
) -> None:
    chance = random.Random(seed)
    points = sorted(chance.sample(EVENT_POINTS, 2))
    delays = [round(chance.uniform(0.0, 0.5), 2) for _ in points]
    print(f"seed {seed}: kill after {points} events, each {delays} s later")
    region = factories.region("local-faults", zones=[])
    images.build(key("1.0.0"))
    factories.publish("1.0.0", region, at=clock.now() - dt.timedelta(days=1), **APP)
    scale_set = factories.scale_set(
        "app", 6, where=region, driver="local", extensions=[APP_HEALTH], max_batch_instance_percent=50, **APP
    )
    local_processes.start_beat()
    local_processes.start_worker("worker", concurrency=2)
    wait_for(lambda: healthy_on(scale_set, "1.0.0"), timeout=60, what="the set on 1.0.0", logs=local_processes.log_tail)
    for instance in scale_set.instances.select_related("scale_set"):
        (local.data_directory(instance) / "orders.db").write_text(f"orders of {instance.name}")
    images.build(key("1.1.0"))
    factories.publish("1.1.0", region, **APP)

    run = services.os_upgrade_now(scale_set=scale_set)
    kills = 0
    for point, delay in zip(points, delays, strict=True):
        wait_for(
            lambda p=point: events_of(run) >= p or is_over(run),
            timeout=120,
            what=f"{point} events",
            logs=local_processes.log_tail,
        )
        wait_seconds(delay)
        if is_over(run):
            break
        seen = events_of(run)
        local_processes.kill("worker")
        kills += 1
        killed = time.monotonic()
        local_processes.start_worker("worker", concurrency=2)
        progressed_after([run], seen, local_processes)
        print(f"seed {seed}: killed at {run.phase}; moved on after {time.monotonic() - killed:.1f} s")

    finished(run, local_processes, timeout=180)
    assert kills, "the run ended before the first kill"
    assert run.status == RunStatus.COMPLETED, run.error_message
    wait_for(lambda: healthy_on(scale_set, "1.1.0"), timeout=60, what="the set on 1.1.0", logs=local_processes.log_tail)
    for instance in scale_set.instances.select_related("scale_set"):
        assert answers(instance)["version"] == "1.1.0"
        assert len(local.live_programs(instance)) == 1, instance.name  # one process, never two
        boots = (local.data_directory(instance) / "boots.log").read_text().splitlines()
        assert len(boots) == 2, (instance.name, boots)  # first boot, then exactly one upgrade
        assert (local.data_directory(instance) / "orders.db").read_text() == f"orders of {instance.name}"
