"""Scenarios through a real Celery worker and beat, real Redis, the real database (no eager
mode): runs are started by services here and moved only by the worker processes."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
from django.db import connection

from config.celery import app as celery_app
from fleet import clock
from fleet import services as fleet_services
from fleet.models import DataDisk, Instance, ScaleSet
from tests import factories
from tests.processes import Processes, wait_for
from upgrades import services
from upgrades.errors import OperationNotAllowed
from upgrades.models import TERMINAL, Kind, OutcomeStatus, RunEvent, RunStatus, StartedBy, UpgradeRun
from upgrades.planner import GATE_AFTER_BATCH, GATE_BEFORE_FIRST, GATE_BEFORE_LATER

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TIME_SCALE = 200.0
WORKER_ENV = {
    "TIME_SCALE": str(TIME_SCALE),
    "ENGINE_POLL_SECONDS": "0.1",
    "ENGINE_DISPATCH_LEASE_SECONDS": "1.5",
    "BEAT_INTERVAL_SECONDS": "0.2",
}
NEW_KEY = factories.NEW_KEY
OLD_KEY = factories.OLD_KEY


@pytest.fixture
def processes(settings):
    settings.TIME_SCALE = TIME_SCALE
    procs = Processes(**WORKER_ENV)
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = procs.queue  # tasks enqueued here reach our worker
    try:
        yield procs
    finally:
        procs.stop_all()
        celery_app.conf.task_default_queue = previous_queue


@pytest.fixture
def running(processes):
    processes.start_worker(concurrency=2)
    processes.start_beat()
    return processes


def finished(run: UpgradeRun, processes: Processes, timeout: float = 120) -> UpgradeRun:
    def done():
        run.refresh_from_db()
        return run.status in TERMINAL

    wait_for(done, timeout=timeout, what=f"run {run.pk} to end (at {run.phase})", logs=processes.log_tail)
    return run


def checksums(scale_set: ScaleSet) -> dict[int, str]:
    return dict(DataDisk.objects.filter(instance__scale_set=scale_set).values_list("pk", "checksum"))


def test_a_100_instances_good_image_completes_in_batches_of_20_within_update_domains(running):
    scale_set = factories.outdated_scale_set(100)
    disks = checksums(scale_set)
    run = finished(services.os_upgrade_now(scale_set=scale_set), running)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert set(scale_set.instances.values_list("os_image", flat=True)) == {NEW_KEY}
    assert checksums(scale_set) == disks
    domains = dict(scale_set.instances.values_list("pk", "update_domain"))
    batches = list(run.batches.order_by("index"))
    assert [b.size for b in batches] == [20] * 5
    for batch in batches:
        assert {domains[o.instance_id] for o in batch.outcomes.all()} == {batch.update_domain}


def test_b_bad_image_manual_trigger_faults_and_failed_instances_stay_failed(running):
    scale_set = factories.outdated_scale_set(100, bad_share=0.3)
    run = finished(services.os_upgrade_now(scale_set=scale_set), running)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    failed = run.outcomes.filter(status=OutcomeStatus.FAILED)
    assert failed.exists()
    assert run.rolled_back_count == 0
    assert set(Instance.objects.filter(pk__in=failed.values("instance_id")).values_list("os_image", flat=True)) == {
        NEW_KEY
    }


def test_c_bad_image_automatic_upgrade_rolls_failed_instances_back(running):
    scale_set = factories.outdated_scale_set(100, bad_share=0.3)
    disks = checksums(scale_set)
    run = services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS, started_by=StartedBy.PLATFORM)
    run = finished(run, running)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    rolled_back = run.outcomes.filter(status=OutcomeStatus.ROLLED_BACK)
    assert rolled_back.count() == run.rolled_back_count > 0
    assert run.rollback_failed_count == 0
    assert run.failed_count == run.rolled_back_count
    instances = Instance.objects.filter(pk__in=rolled_back.values("instance_id"))
    assert set(instances.values_list("os_image", "health_state")) == {(OLD_KEY, "Healthy")}
    assert checksums(scale_set) == disks


def test_d_a_quarter_unhealthy_before_the_start_is_refused(running):
    scale_set = factories.outdated_scale_set(20)
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=[0, 1, 2, 3, 4], on=True)
    run = finished(services.os_upgrade_now(scale_set=scale_set), running)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_BEFORE_FIRST)
    assert set(scale_set.instances.values_list("os_image", flat=True)) == {OLD_KEY}


def test_e_maintenance_mid_run_stops_after_the_current_batch(running):
    scale_set = factories.outdated_scale_set(50)
    run = services.os_upgrade_now(scale_set=scale_set)
    wait_for(
        lambda: UpgradeRun.objects.filter(pk=run.pk, current_batch__gte=0).exists(),
        timeout=60,
        what="the first batch",
        logs=running.log_tail,
    )
    later_domains = [n for n in range(50) if n % 5 in (3, 4)]  # 20 of 50, none in the first batch
    fleet_services.instances_set_maintenance(scale_set=scale_set, instance_ids=later_domains, on=True)
    run = finished(run, running)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_BEFORE_LATER)
    assert run.in_progress_count == 0
    assert run.pending_count > 0


def test_f_cancel_mid_run(running):
    scale_set = factories.outdated_scale_set(50, pause_time_between_batches="PT1M")
    run = services.os_upgrade_now(scale_set=scale_set)
    wait_for(
        lambda: UpgradeRun.objects.filter(pk=run.pk, current_batch__gte=1).exists(),
        timeout=60,
        what="the second batch",
        logs=running.log_tail,
    )
    services.run_cancel(scale_set=scale_set)
    run = finished(run, running)
    assert run.status == RunStatus.CANCELLED
    assert run.last_action == "Cancel"
    assert run.in_progress_count == 0
    assert run.pending_count > 0
    assert run.successful_count == sum(b.size for b in run.batches.filter(status="Succeeded"))


def test_g_expired_credential_fails_the_first_batch_and_recovery_brings_every_instance_back(running):
    key_vault = factories.key_vault(clock.now() - dt.timedelta(days=1))
    scale_set = factories.outdated_scale_set(20, extensions=[factories.APP_HEALTH_HTTP, key_vault])
    run = finished(services.rolling_upgrade(scale_set=scale_set), running)
    assert (run.status, run.error_code) == (RunStatus.FAULTED, GATE_AFTER_BATCH)
    assert run.batches.get(index=0).status == "Failed"
    fresh = (clock.now() + dt.timedelta(days=365)).isoformat()
    scale_set.extensions.filter(name="KeyVault").update(
        protected_settings={"credential": {"secret": "y", "expiresOn": fresh}}
    )
    ScaleSet.objects.filter(pk=scale_set.pk).update(model_version=scale_set.model_version + 1)
    scale_set.refresh_from_db()
    recovery = finished(services.manual_upgrade(scale_set=scale_set, instance_ids="*"), running)
    assert recovery.status == RunStatus.COMPLETED
    states = set(scale_set.instances.values_list("health_state", "provisioning_state", "model_version"))
    assert states == {("Healthy", "succeeded", scale_set.model_version)}


# --- crashes and concurrency ----------------------------------------------------------------


def upgrades_per_instance(run: UpgradeRun) -> Counter[int]:
    """How often each instance was sent to the driver for this run (from the driver's record)."""
    operation = f"run-{run.pk}-upgrade"
    counts: Counter[int] = Counter()
    for number, operations in Instance.objects.filter(scale_set=run.scale_set).values_list(
        "instance_id", "driver_operations"
    ):
        counts[number] = operations.count(operation)
    return counts


def assert_clean_end(run: UpgradeRun, scale_set: ScaleSet, disks: dict[int, str]) -> None:
    assert run.status in TERMINAL
    assert run.in_progress_count == 0
    assert not run.outcomes.filter(status=OutcomeStatus.IN_PROGRESS).exists()
    assert max(upgrades_per_instance(run).values()) <= 1
    for number, disk in scale_set.instances.values_list("instance_id", "os_disk"):
        assert disk.endswith(("_1", "_2")), (number, disk)  # at most one new OS disk each
    started = Counter(
        RunEvent.objects.filter(run=run, to_state=OutcomeStatus.IN_PROGRESS).values_list(
            "instance_id_number", flat=True
        )
    )
    assert max(started.values()) == 1
    assert checksums(scale_set) == disks
    targeted = run.outcomes.exclude(status=OutcomeStatus.SKIPPED).count()
    assert run.successful_count + run.failed_count + run.pending_count == targeted


def test_two_workers_at_once_give_the_same_result_as_one(processes):
    results = []
    for workers in (1, 2):
        scale_set = factories.outdated_scale_set(
            40,
            name="twin",
            where=factories.region(f"region{workers}"),
            bad_share=0.1,
            max_unhealthy_upgraded_instance_percent=50,
        )
        disks = checksums(scale_set)
        names = [f"worker{n}" for n in range(workers)]
        for name in names:
            processes.start_worker(name, concurrency=2)
        processes.start_beat()
        run = finished(services.run_start(scale_set=scale_set, kind=Kind.AUTOMATIC_OS), processes)
        assert_clean_end(run, scale_set, disks)
        results.append(
            (run.status, sorted(run.outcomes.values_list("instance_id_number", "status")), run.rolled_back_count)
        )
        processes.stop_all()
        scale_set.delete()  # the twin has the same name, so the simulator picks the same instances
    assert results[0] == results[1]


def test_fifty_concurrent_starts_make_exactly_one_run(processes):
    scale_set = factories.outdated_scale_set(10)
    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def start() -> None:
        barrier.wait()
        try:
            services.os_upgrade_now(scale_set=ScaleSet.objects.get(pk=scale_set.pk))
            result = "started"
        except OperationNotAllowed:
            result = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=start) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert Counter(outcomes) == {"started": 1, "refused": 49}
    assert UpgradeRun.objects.filter(scale_set=scale_set).count() == 1
