"""The local-process driver end to end (SPEC 8): real instance processes, probed over real
sockets (R-H-2), moved by a real Celery worker and beat through the same engine as the
simulator's sets. Nothing is driven in-process: the test starts runs through the services and
watches the database, the processes and their data directories."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.celery import app as celery_app
from fleet import clock
from fleet.drivers.local import driver as local
from fleet.drivers.local import images
from fleet.models import HealthState, Instance, InstanceProcess, PowerState, ProvisioningState, ScaleSet, SupportedOsSku
from fleet.selectors import heatmap_cells, target_image
from tests import factories
from tests.processes import Processes, wait_for
from upgrades import services
from upgrades.models import TERMINAL, RunStatus, UpgradeRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TIME_SCALE = 200.0
APP = {"image_publisher": "Contoso", "image_offer": "DemoApp", "image_sku": "app"}
APP_HEALTH = {
    **factories.APP_HEALTH_HTTP,
    "settings": {"protocol": "http", "port": 8080, "requestPath": "/health", "intervalInSeconds": 5},
}


def key(version: str) -> str:
    return f"platform:Contoso/DemoApp/app:{version}"


@pytest.fixture
def local_dirs(tmp_path: Path, settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    settings.LOCAL_IMAGE_STORE = tmp_path / "images"
    settings.LOCAL_INSTANCE_ROOT = tmp_path / "instances"
    settings.TIME_SCALE = TIME_SCALE
    return {"LOCAL_IMAGE_STORE": str(tmp_path / "images"), "LOCAL_INSTANCE_ROOT": str(tmp_path / "instances")}


@pytest.fixture
def running(local_dirs: dict[str, str]) -> Iterator[Processes]:
    processes = Processes(
        TIME_SCALE=str(TIME_SCALE),
        ENGINE_POLL_SECONDS="0.1",
        BEAT_INTERVAL_SECONDS="0.2",
        AUTOMATIC_UPGRADE_DELAY_SECONDS="0",
        AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS="0",
        **local_dirs,
    )
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = processes.queue
    processes.start_worker(concurrency=2)
    processes.start_beat()
    try:
        yield processes
    finally:
        processes.stop_all()
        local.stop_all()
        local.stop_processes(local.orphan_processes())
        celery_app.conf.task_default_queue = previous_queue


def publish(version: str, *, behaviour: str = "healthy", days_ago: float = 0) -> None:
    images.build(key(version), behaviour=behaviour)
    factories.publish(version, factories.region(), at=clock.now() - dt.timedelta(days=days_ago), **APP)


def local_set(capacity: int = 4, **model: object) -> ScaleSet:
    return factories.scale_set(
        "app",
        capacity,
        zones=[],
        driver="local",
        image_source="platform",
        image_version="latest",
        extensions=[APP_HEALTH],
        max_batch_instance_percent=50,
        **APP,
        **model,
    )


def version_of(instance: Instance) -> str:
    """What the instance's process says it runs, asked over its own port."""
    port = instance.process.port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=2) as answer:
        return str(json.load(answer)["version"])


def all_healthy(scale_set: ScaleSet, processes: Processes, timeout: float = 60) -> list[Instance]:
    def healthy() -> list[Instance] | None:
        rows = list(scale_set.instances.select_related("process", "scale_set"))
        good = all(
            r.health_state == HealthState.HEALTHY
            and r.power_state == PowerState.RUNNING
            and r.driver_due_at is None
            and InstanceProcess.objects.filter(instance=r, pid__isnull=False).exists()
            for r in rows
        )
        return rows if good else None

    rows: list[Instance] = wait_for(healthy, timeout=timeout, what="every instance healthy", logs=processes.log_tail)
    return rows


def finished(run: UpgradeRun, processes: Processes, timeout: float = 120) -> UpgradeRun:
    def done() -> bool:
        run.refresh_from_db()
        return run.status in TERMINAL

    wait_for(done, timeout=timeout, what=f"run {run.pk} to end (at {run.phase})", logs=processes.log_tail)
    return run


def write_data(instances: list[Instance]) -> dict[int, bytes]:
    """A file in each instance's data directory, as an application would keep its state."""
    written = {}
    for instance in instances:
        content = f"orders of {instance.name}\n".encode() * 100
        (local.data_directory(instance) / "orders.db").write_bytes(content)
        written[instance.pk] = content
    return written


def assert_data_intact(instances: list[Instance], written: dict[int, bytes]) -> None:
    for instance in instances:
        assert (local.data_directory(instance) / "orders.db").read_bytes() == written[instance.pk], instance.name


def test_a_new_local_set_boots_real_processes_that_answer_their_image_version(running: Processes) -> None:
    publish("1.0.0", days_ago=1)
    scale_set = local_set(3)
    rows = all_healthy(scale_set, running)
    assert [version_of(r) for r in rows] == ["1.0.0"] * 3
    assert len({r.process.pid for r in rows}) == 3
    assert all(local.process_alive(r.process.pid or 0, local.instance_directory(r)) for r in rows)
    # R-H-2: the health the console shows is what the probes heard
    assert {r.process.last_answer for r in rows} == {"ApplicationHealthState Healthy"}


def test_a_good_image_upgrades_every_process_and_keeps_the_data(running: Processes) -> None:
    publish("1.0.0", days_ago=1)
    scale_set = local_set(4)
    before = all_healthy(scale_set, running)
    written = write_data(before)
    old_pids = {r.pk: r.process.pid for r in before}
    publish("1.1.0")

    run = finished(services.os_upgrade_now(scale_set=scale_set), running)

    assert run.status == RunStatus.COMPLETED, run.error_message
    after = all_healthy(scale_set, running)
    assert [version_of(r) for r in after] == ["1.1.0"] * 4
    assert all(r.process.pid != old_pids[r.pk] for r in after)  # new processes, from new OS directories
    assert {r.os_image for r in after} == {key("1.1.0")}
    assert_data_intact(after, written)
    for instance in after:  # R-UPG-1: the previous OS directory is kept for rollback
        assert (local.os_directory(instance, instance.previous_os_disk) / "image.json").exists()
        boots = (local.data_directory(instance) / "boots.log").read_text().splitlines()
        assert len(boots) == 2, boots


def test_an_image_that_answers_unhealthy_trips_the_gates_and_automatic_rollback_restarts_the_old_version(
    running: Processes,
) -> None:
    SupportedOsSku.objects.create(publisher="Contoso", offer="DemoApp", sku="app")
    publish("1.0.0", days_ago=1)
    scale_set = local_set(4, max_unhealthy_upgraded_instance_percent=20)
    before = all_healthy(scale_set, running)
    written = write_data(before)
    services.automatic_os_upgrade_set(scale_set=scale_set, enabled=True)

    publish("1.3.0", behaviour="unhealthy")  # the automatic upgrade takes it by itself (R-AUTO-2)

    def automatic_run() -> UpgradeRun | None:
        return UpgradeRun.objects.filter(scale_set=scale_set, status__in=list(TERMINAL)).first()

    run = wait_for(automatic_run, timeout=120, what="the automatic upgrade to end", logs=running.log_tail)
    assert run.status == RunStatus.FAULTED, (run.status, run.error_message)
    first_batch = run.batches.get(index=0)
    reasons = set(run.outcomes.filter(batch__index=0).values_list("reason", flat=True))
    assert all("ApplicationHealthState Unhealthy" in r for r in reasons), reasons
    assert run.rolled_back_count == first_batch.size  # every instance of it answered Unhealthy
    after = all_healthy(scale_set, running)
    # R-ROLLBACK-1: the instances it upgraded boot the previous OS directory again
    assert [version_of(r) for r in after] == ["1.0.0"] * 4
    assert {r.os_image for r in after} == {key("1.0.0")}
    assert_data_intact(after, written)


def test_an_image_that_never_listens_fails_the_batch_on_probes_refused(running: Processes) -> None:
    publish("1.0.0", days_ago=1)
    scale_set = local_set(4)
    before = all_healthy(scale_set, running)
    written = write_data(before)
    publish("1.4.0", behaviour="refuses")

    run = finished(services.os_upgrade_now(scale_set=scale_set), running)

    assert run.status == RunStatus.FAULTED, run.status
    first_batch = list(run.outcomes.filter(batch__index=0).values_list("instance_id", flat=True))
    broken = Instance.objects.filter(pk__in=first_batch).select_related("process")
    # R-H-2: refused connections are Unknown; past the grace period an http endpoint stays Unknown
    assert {i.health_state for i in broken} == {HealthState.UNKNOWN}
    assert all("refused" in i.process.last_answer for i in broken)
    # the run says why, in the probe's words
    reasons = set(run.outcomes.filter(batch__index=0).values_list("reason", flat=True))
    assert all("Health probe http :8080/health" in r and "refused" in r for r in reasons), reasons
    # the gate stopped the run after its first batch: the others were never touched
    assert scale_set.instances.exclude(pk__in=first_batch).filter(os_image=key("1.0.0")).count() == 4 - len(first_batch)
    assert_data_intact(list(scale_set.instances.all()), written)


def test_a_process_killed_by_hand_is_unhealthy_on_the_heatmap_within_the_probe_interval(running: Processes) -> None:
    publish("1.0.0", days_ago=1)
    scale_set = local_set(2)
    victim = all_healthy(scale_set, running)[0]
    interval = local.probe_interval(scale_set)

    os.kill(victim.process.pid or 0, signal.SIGKILL)
    killed_at = time.monotonic()

    def unhealthy_cell() -> bool:
        fresh = ScaleSet.objects.get(pk=scale_set.pk)
        cells = heatmap_cells(fresh, target=target_image(fresh), instance_pks=[victim.pk])
        return cells[0][5] == "unhealthy"  # the cell's colour (fleet.heatmap.cell_state)

    wait_for(unhealthy_cell, timeout=30, what="the killed instance's cell to turn unhealthy", logs=running.log_tail)
    seen_after = time.monotonic() - killed_at
    # One probe interval, plus a beat tick for the probe round to be sent (and a margin for a
    # busy machine: the round itself is milliseconds).
    assert seen_after <= interval + 1.0, (seen_after, interval)
    victim.refresh_from_db()
    assert "not running" in victim.last_error


def test_instances_outlive_a_console_stop_and_start_again_from_their_recorded_state(
    running: Processes,
) -> None:
    publish("1.0.0", days_ago=1)
    scale_set = local_set(2)
    before = all_healthy(scale_set, running)
    assert local.stop_all(scale_set_ids=[scale_set.pk]) == 2

    assert local.resume_all() == 2

    def restarted() -> bool:
        rows = list(scale_set.instances.select_related("process", "scale_set"))
        return all(
            r.process.pid not in {b.process.pid for b in before}
            and local.process_alive(r.process.pid or 0, local.instance_directory(r))
            and r.health_state == HealthState.HEALTHY
            for r in rows
        )

    wait_for(restarted, timeout=60, what="the instances to start again", logs=running.log_tail)
    assert [version_of(r) for r in scale_set.instances.select_related("process", "scale_set")] == ["1.0.0"] * 2
    assert set(scale_set.instances.values_list("provisioning_state", flat=True)) == {ProvisioningState.SUCCEEDED}
