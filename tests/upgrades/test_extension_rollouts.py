"""Automatic extension upgrades (SPEC 3.5: R-EXT-1..4), driven in exact simulated time."""

from __future__ import annotations

import datetime as dt

import pytest

from fleet import clock, services
from fleet.models import DataDisk, FaultProfile, Instance, ScaleSetExtension
from tests import factories
from tests.factories import APP_HEALTH_HTTP
from upgrades.models import Kind, Rollout, RolloutStatus, RunStatus, StartedBy, UpgradeRun
from upgrades.services import reimage

pytestmark = pytest.mark.django_db

MONITOR = {
    "name": "Monitoring",
    "publisher": "Microsoft.Azure.Monitor",
    "type": "AzureMonitorLinuxAgent",
    "type_handler_version": "1.0",
    "enable_automatic_upgrade": True,
}
SCRIPT = {
    "name": "CustomScript",
    "publisher": "Microsoft.Azure.Extensions",
    "type": "CustomScript",
    "type_handler_version": "2.1",
    "enable_automatic_upgrade": True,
    "provision_after_extensions": ["Monitoring"],
}
MONITOR_NEW = "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@1.1"
SCRIPT_NEW = "Microsoft.Azure.Extensions.CustomScript@2.2"


def ext_set(name: str = "web", capacity: int = 10, extensions=(MONITOR, SCRIPT), where=None):
    return factories.scale_set(name, capacity, where=where, zones=[], extensions=[APP_HEALTH_HTTP, *extensions])


def release(key: str) -> None:
    kind, version = key.split("@")
    publisher, _, type_ = kind.rpartition(".")
    services.extension_version_publish(publisher=publisher, type=type_, version=version)


def versions(name: str, scale_set=None) -> set[tuple[str, str]]:
    rows = Instance.objects.all() if scale_set is None else Instance.objects.filter(scale_set=scale_set)
    return {(s[name]["version"], s[name]["state"]) for s in rows.values_list("extension_states", flat=True)}


def test_a_released_version_reaches_every_set_that_opted_in_r_ext_1(drive_fleet):
    first, second = ext_set("first"), ext_set("second", where=factories.region("westus"))
    opted_out = ext_set("opted-out", extensions=[{**MONITOR, "enable_automatic_upgrade": False}])
    disks = dict(DataDisk.objects.values_list("pk", "checksum"))
    os_disks = dict(Instance.objects.values_list("pk", "os_disk"))
    release(MONITOR_NEW)
    drive_fleet()

    assert versions("Monitoring", first) == versions("Monitoring", second) == {("1.1", "Succeeded")}
    assert versions("Monitoring", opted_out) == {("1.0", "Succeeded")}
    runs = UpgradeRun.objects.filter(kind=Kind.EXTENSION)
    assert {r.scale_set_id for r in runs} == {first.pk, second.pk}
    assert {(r.status, r.started_by) for r in runs} == {(RunStatus.COMPLETED, StartedBy.PLATFORM)}
    # in batches as in 3.2: at most 20 % (2 of 10), the health wait after each
    assert {r.batch_count for r in runs} == {5}
    assert all(b.size <= 2 and b.upgraded_at is not None for r in runs for b in r.batches.all())
    # only the extension changed: the OS disk and the data disks are the same
    assert dict(Instance.objects.values_list("pk", "os_disk")) == os_disks
    assert dict(DataDisk.objects.values_list("pk", "checksum")) == disks
    # the model keeps its typeHandlerVersion; a new OS disk gets the version that landed
    monitoring = ScaleSetExtension.objects.get(scale_set=first, name="Monitoring")
    assert (monitoring.type_handler_version, monitoring.effective_version) == ("1.0", "1.1")
    reimage(scale_set=first, instance_ids=[0])
    drive_fleet()
    assert versions("Monitoring", first) == {("1.1", "Succeeded")}


def test_only_newer_versions_of_the_same_major_are_taken_r_ext_1(drive_fleet):
    ext_set()
    release("Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@2.0")
    release("Microsoft.Azure.Monitor.AzureMonitorLinuxAgent@0.9")
    drive_fleet()
    assert not UpgradeRun.objects.exists()
    assert versions("Monitoring") == {("1.0", "Succeeded")}


def test_an_instance_unhealthy_after_the_upgrade_gets_the_previous_version_back_r_ext_1(drive_fleet):
    ext_set()
    FaultProfile.objects.create(target=MONITOR_NEW, never_healthy_share=1.0)
    release(MONITOR_NEW)
    drive_fleet(until=lambda: Rollout.objects.filter(status=RolloutStatus.HALTED).exists())
    run = UpgradeRun.objects.get()
    assert run.status == RunStatus.FAULTED
    assert run.rolled_back_count == 2  # the first batch, then R-GATE-3 stopped it
    assert versions("Monitoring") == {("1.0", "Succeeded")}
    assert set(Instance.objects.values_list("health_state", flat=True)) == {"Healthy"}


def test_a_failed_extension_upgrade_is_retried_after_the_interval_r_ext_2(drive_fleet, settings):
    settings.EXTENSION_UPGRADE_RETRY_SECONDS = 2 * 86400
    ext_set()
    FaultProfile.objects.create(target=MONITOR_NEW, provisioning_failure_share=1.0)
    release(MONITOR_NEW)
    drive_fleet(until=lambda: Rollout.objects.filter(status=RolloutStatus.HALTED).exists())
    rollout = Rollout.objects.get()
    assert rollout.retry_at == rollout.halted_at + dt.timedelta(days=2)
    assert "instance 0: Provisioning failed: Monitoring 1.1" in rollout.halt_reason
    halted_at = rollout.halted_at
    FaultProfile.objects.all().delete()  # the publisher fixed the handler meanwhile
    drive_fleet()

    rollout.refresh_from_db()
    assert (rollout.status, rollout.attempts) == (RolloutStatus.COMPLETED, 2)
    second = UpgradeRun.objects.order_by("started_at").last()
    assert second.started_at >= halted_at + dt.timedelta(days=2)
    assert second.status == RunStatus.COMPLETED
    assert versions("Monitoring") == {("1.1", "Succeeded")}


def test_two_pending_upgrades_one_bad_the_good_one_lands_everywhere_r_ext_3(drive_fleet, settings):
    settings.EXTENSION_UPGRADE_RETRY_SECONDS = 86400
    sets = [ext_set("one"), ext_set("two", where=factories.region("westus"))]
    FaultProfile.objects.create(target=SCRIPT_NEW, never_healthy_share=1.0)
    release(MONITOR_NEW)
    release(SCRIPT_NEW)
    drive_fleet(
        until=lambda: (
            not UpgradeRun.objects.filter(status=RunStatus.ROLLING_FORWARD).exists()
            and Rollout.objects.filter(status=RolloutStatus.HALTED).exists()
            and Rollout.objects.filter(status=RolloutStatus.COMPLETED).exists()
        )
    )

    good = Rollout.objects.get(target=MONITOR_NEW)
    bad = Rollout.objects.get(target=SCRIPT_NEW)
    assert good.status == RolloutStatus.COMPLETED
    assert bad.status == RolloutStatus.HALTED
    assert bad.retry_at is not None
    assert versions("Monitoring") == {("1.1", "Succeeded")}
    assert versions("CustomScript") == {("2.1", "Succeeded")}  # rolled back
    assert set(Instance.objects.values_list("health_state", flat=True)) == {"Healthy"}
    # applied one by one: never two extension runs on one set at once
    for scale_set in sets:
        runs = list(UpgradeRun.objects.filter(scale_set=scale_set).order_by("started_at"))
        for a, b in zip(runs, runs[1:], strict=False):
            assert a.ended_at <= b.started_at

    # retried later: still bad, so halted again, and nothing else disturbed
    retry_at = bad.retry_at
    drive_fleet(
        until=lambda: Rollout.objects.filter(target=SCRIPT_NEW, attempts=2, status=RolloutStatus.HALTED).exists()
    )
    retried = (
        UpgradeRun.objects.filter(kind=Kind.EXTENSION, target_extensions={"CustomScript": "2.2"})
        .order_by("started_at")
        .last()
    )
    assert retried.started_at >= retry_at
    assert versions("Monitoring") == {("1.1", "Succeeded")}


def test_extension_order_on_first_deployment_upgrades_independent_later_r_ext_4(drive_fleet):
    scale_set = ext_set(capacity=2)
    # first deployment (a new OS disk): provisionAfterExtensions order, CustomScript after Monitoring
    reimage(scale_set=scale_set, instance_ids=[0])
    instance = Instance.objects.get(scale_set=scale_set, instance_id=0)
    first_seen: dict[str, int] = {}
    for n, step in enumerate(instance.driver_plan):
        for name in step["set"].get("extension_states") or {}:
            first_seen.setdefault(name, n)
    assert first_seen["Monitoring"] < first_seen["CustomScript"]
    drive_fleet()
    # a later upgrade of Monitoring leaves CustomScript alone (no reinstall after it)
    before = {i.pk: i.extension_states["CustomScript"] for i in Instance.objects.all()}
    release(MONITOR_NEW)
    drive_fleet()
    run = UpgradeRun.objects.get(kind=Kind.EXTENSION)
    assert run.target_extensions == {"Monitoring": "1.1"}
    assert {i.pk: i.extension_states["CustomScript"] for i in Instance.objects.all()} == before
    assert versions("Monitoring") == {("1.1", "Succeeded")}


def test_a_release_published_later_than_now_is_not_taken_yet(drive_fleet):
    ext_set()
    services.extension_version_publish(
        publisher="Microsoft.Azure.Monitor",
        type="AzureMonitorLinuxAgent",
        version="1.1",
        at=clock.now() + dt.timedelta(days=365),
    )
    drive_fleet()
    assert not Rollout.objects.exists()


def test_extension_runs_appear_in_history_with_their_kind(drive_fleet, client):
    scale_set = ext_set()
    release(MONITOR_NEW)
    drive_fleet()
    client.force_login(factories.user("viewer"))
    page = client.get("/history/", {"kind": Kind.EXTENSION})
    assert page.status_code == 200
    html = page.content.decode()
    assert "Extension upgrade" in html
    assert "Monitoring 1.1" in html
    assert scale_set.name in html
    other = client.get("/history/", {"kind": Kind.AUTOMATIC_OS})
    assert "Monitoring 1.1" not in other.content.decode()
    run = UpgradeRun.objects.get(kind=Kind.EXTENSION)
    detail = client.get(f"/runs/{run.pk}/").content.decode()
    assert "Monitoring 1.0" in detail  # each instance's outcome says from which version
