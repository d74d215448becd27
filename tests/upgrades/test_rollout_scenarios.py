"""Automatic upgrades through a real Celery worker and beat (no eager mode): a version is
published here, and everything after — noticing it, the rollout's phases, the runs, rollback,
retries — is done by the worker processes (R-AUTO-2, R-AVAIL-1, R-EXT-1..3)."""

from __future__ import annotations

import pytest

from config.celery import app as celery_app
from fleet import clock
from fleet.models import FaultProfile, Instance, Region, SupportedOsSku
from tests import factories
from tests.processes import Processes, wait_for
from tests.upgrades.test_extension_rollouts import MONITOR, MONITOR_NEW, SCRIPT, SCRIPT_NEW, release, versions
from tests.upgrades.test_rollouts import NEW_KEY, OLD_KEY, fleet_of_twelve, overlap, publish_new, run_intervals
from upgrades.models import Kind, Rollout, RolloutStatus, RolloutStep, RunStatus, StartedBy, StepStatus, UpgradeRun

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]

TIME_SCALE = 200.0
WORKER_ENV = {
    "TIME_SCALE": str(TIME_SCALE),
    "ENGINE_POLL_SECONDS": "0.1",
    "ENGINE_DISPATCH_LEASE_SECONDS": "1.5",
    "BEAT_INTERVAL_SECONDS": "0.2",
    # The delays' own rules are tested in exact simulated time (test_rollouts); here they
    # would only make the scenario wait.
    "AUTOMATIC_UPGRADE_DELAY_SECONDS": "0",
    "AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS": "0",
    "EXTENSION_UPGRADE_RETRY_SECONDS": "1200",  # 6 real seconds at this scale
}


@pytest.fixture
def running(settings):
    settings.TIME_SCALE = TIME_SCALE
    # A transactional test empties the tables after itself, seeded ones included.
    SupportedOsSku.objects.get_or_create(publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS")
    procs = Processes(**WORKER_ENV)
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = procs.queue
    procs.start_worker(concurrency=2)
    procs.start_beat()
    try:
        yield procs
    finally:
        procs.stop_all()
        celery_app.conf.task_default_queue = previous_queue


def rollout_ends(processes: Processes, status: str, timeout: float = 240) -> Rollout:
    def ended():
        rollout = Rollout.objects.first()
        if rollout is None or rollout.status != status:
            return None
        if UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD).exists():
            return None
        return rollout

    return wait_for(ended, timeout=timeout, what=f"the rollout to be {status}", logs=processes.log_tail)


def test_a_good_version_reaches_all_twelve_sets_availability_first(running, client):
    sets = fleet_of_twelve()
    publish_new(*Region.objects.all())
    rollout = rollout_ends(running, RolloutStatus.COMPLETED)

    assert rollout.target == NEW_KEY
    assert set(Instance.objects.values_list("os_image", flat=True)) == {NEW_KEY}
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS).select_related("scale_set__region")
    assert {r.scale_set_id for r in runs} == {s.pk for s in sets}
    assert {(r.status, r.started_by) for r in runs} == {(RunStatus.COMPLETED, StartedBy.PLATFORM)}

    # From the event log: paired regions never upgrade at once, nor two zones of a region.
    spans = run_intervals(runs)
    zone = {r.pk: set(r.outcomes.exclude(status="Skipped").values_list("instance__zone", flat=True)) for r in runs}
    for a in spans:
        for b in spans:
            region_a, region_b = a[0].scale_set.region, b[0].scale_set.region
            if region_a.geo_pair_id == region_b.pk:
                assert not overlap(a, b), f"paired regions at once: runs {a[0].pk} and {b[0].pk}"
            if region_a.pk == region_b.pk and zone[a[0].pk] != zone[b[0].pk]:
                assert not overlap(a, b), f"two zones of {region_a.name} at once: runs {a[0].pk} and {b[0].pk}"
    client.force_login(factories.user("viewer"))
    history = client.get("/history/", {"kind": Kind.AUTOMATIC_OS}).content.decode()
    assert history.count("<td>Platform") == len(runs)

    phases: dict[int, set[str]] = {}
    for step in RolloutStep.objects.select_related("region__geo_pair"):
        phases.setdefault(step.phase, set()).add(step.region.name)
    for names in phases.values():
        assert not any(Region.objects.get(name=n).geo_pair.name in names for n in names)


def test_a_bad_version_fails_the_first_phase_and_nothing_after_it_starts(running):
    fleet_of_twelve()
    FaultProfile.objects.create(target=NEW_KEY, never_healthy_share=1.0)
    publish_new(*Region.objects.all())
    rollout = rollout_ends(running, RolloutStatus.HALTED)

    assert rollout.halt_reason.startswith("Phase 1, ")
    assert not RolloutStep.objects.filter(phase__gt=0).exclude(status=StepStatus.PENDING).exists()
    first_region = RolloutStep.objects.get(phase=0, position=0).region
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    assert {r.scale_set.region_id for r in runs} == {first_region.pk}
    assert {r.status for r in runs} == {RunStatus.FAULTED}
    assert sum(r.rolled_back_count for r in runs) >= 1
    # the failed instances were rolled back: every instance is on the old image, healthy
    assert set(Instance.objects.values_list("os_image", flat=True)) == {OLD_KEY}
    assert set(Instance.objects.values_list("health_state", flat=True)) == {"Healthy"}


def test_two_pending_extension_upgrades_one_bad(running):
    for name, where in (("one", "eastus"), ("two", "westus")):
        factories.scale_set(
            name, 5, where=factories.region(where), zones=[], extensions=[factories.APP_HEALTH_HTTP, MONITOR, SCRIPT]
        )
    FaultProfile.objects.create(target=SCRIPT_NEW, never_healthy_share=1.0)
    release(MONITOR_NEW)
    release(SCRIPT_NEW)

    def settled():
        good = Rollout.objects.filter(target=MONITOR_NEW, status=RolloutStatus.COMPLETED).first()
        bad = Rollout.objects.filter(target=SCRIPT_NEW, status=RolloutStatus.HALTED, attempts__gte=2).first()
        idle = not UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD).exists()
        return (good, bad) if good and bad and idle else None

    _, bad = wait_for(
        settled, timeout=240, what="the good extension to land and the bad one to be retried", logs=running.log_tail
    )
    assert versions("Monitoring") == {("1.1", "Succeeded")}
    assert versions("CustomScript") == {("2.1", "Succeeded")}  # rolled back, twice
    retried = UpgradeRun.objects.filter(target_extensions={"CustomScript": "2.2"}).order_by("started_at")
    assert retried.count() >= 2
    assert all(r.rolled_back_count >= 1 for r in retried if r.status != RunStatus.ROLLING_FORWARD)
    first, second = retried[0], retried[1]
    assert second.started_at >= first.ended_at + clock.scaled(1200)  # the retry interval (R-EXT-2)
    assert bad.halt_reason
