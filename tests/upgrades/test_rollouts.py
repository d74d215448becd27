"""Automatic OS image upgrades and availability-first rollouts (SPEC 3.4: R-AUTO-2..5, R-AVAIL-1),
driven in exact simulated time (the `drive_fleet` fixture does what the beat does)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db.models import Max, Min

from fleet import clock, services
from fleet.models import FaultProfile, Instance, Region, ScaleSet, UpgradeMode
from tests import factories
from tests.factories import APP_HEALTH_HTTP, NEW_KEY, NEW_VERSION, OLD_KEY
from upgrades import rollouts
from upgrades.models import (
    Kind,
    Rollout,
    RolloutStatus,
    RolloutStep,
    RolloutTarget,
    RunEvent,
    RunStatus,
    StartedBy,
    StepStatus,
    TargetStatus,
    UpgradeRun,
)
from upgrades.planner import plan_phases
from upgrades.services import automatic_os_upgrade_set, update_model

pytestmark = pytest.mark.django_db

PAIRS = [("alpha-east", "alpha-west"), ("beta-east", "beta-west"), ("gamma-east", "gamma-west")]


def six_regions() -> list[Region]:
    made = []
    for east, west in PAIRS:
        a, b = factories.region(east), factories.region(west)
        services.region_pair(region=a, partner=b)
        made += [a, b]
    return made


def auto_set(name: str, where: Region, capacity: int = 6, **model) -> ScaleSet:
    model.setdefault("zones", [])
    return factories.scale_set(
        name,
        capacity,
        where=where,
        extensions=[APP_HEALTH_HTTP],
        enable_automatic_os_upgrade=True,
        **model,
    )


def fleet_of_twelve() -> list[ScaleSet]:
    """Two sets per region: one regional, one across three zones."""
    sets = []
    for where in six_regions():
        sets.append(auto_set(f"{where.name}-a", where))
        sets.append(auto_set(f"{where.name}-z", where, capacity=9, zones=["1", "2", "3"]))
    return sets


def publish_new(*regions: Region) -> None:
    factories.publish(NEW_VERSION, *regions, at=clock.now())


def run_intervals(runs) -> list[tuple[UpgradeRun, dt.datetime, dt.datetime]]:
    """When each run really upgraded something: its first batch start to its end (event log)."""
    spans = []
    for run in runs:
        started = RunEvent.objects.filter(run=run, to_state="batch_started").aggregate(t=Min("at"))["t"]
        ended = RunEvent.objects.filter(run=run).aggregate(t=Max("at"))["t"]
        if started is not None:
            spans.append((run, started, ended))
    return spans


def overlap(a: tuple, b: tuple) -> bool:
    return a[1] < b[2] and b[1] < a[2]


# --- the pure phase plan ------------------------------------------------------------------------


def test_phases_never_hold_both_regions_of_a_geo_pair_r_avail_1():
    pair = {"a1": "a2", "a2": "a1", "b1": "b2", "b2": "b1", "c1": "c2", "c2": "c1"}
    for order in (["a1", "a2", "b1", "b2", "c1", "c2"], ["c2", "c1", "a1", "b1", "a2", "b2"]):
        phases = plan_phases(order, pair)
        assert sorted(r for p in phases for r in p) == sorted(order)
        for phase in phases:
            assert not any(pair[r] in phase for r in phase), phases
        assert len(phases[0]) == 1  # a canary region first


def test_phases_grow_one_two_four_without_pairs():
    assert [len(p) for p in plan_phases([f"r{n}" for n in range(7)], {})] == [1, 2, 4]
    assert [len(p) for p in plan_phases(["x", "y", "z"], {}, canary=False)] == [3]


# --- R-AUTO-2: a new latest version starts automatic runs ------------------------------------


def test_a_good_version_reaches_every_set_phase_by_phase_r_auto_2_r_avail_1(drive_fleet, settings):
    sets = fleet_of_twelve()
    drive_fleet()  # nothing to do yet: every set is on the latest image
    assert not Rollout.objects.exists()
    publish_new(*Region.objects.all())
    drive_fleet()

    rollout = Rollout.objects.get()
    assert (rollout.kind, rollout.target, rollout.status) == ("OSImage", NEW_KEY, RolloutStatus.COMPLETED)
    assert set(Instance.objects.values_list("os_image", flat=True)) == {NEW_KEY}
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    assert {r.started_by for r in runs} == {StartedBy.PLATFORM}
    assert {r.status for r in runs} == {RunStatus.COMPLETED}
    assert {r.scale_set_id for r in runs} == {s.pk for s in sets}

    # phases never hold both regions of a pair, and paired regions never upgrade at once
    steps = list(RolloutStep.objects.select_related("region"))
    phases: dict[int, set[str]] = {}
    for step in steps:
        phases.setdefault(step.phase, set()).add(step.region.name)
    assert len(phases[0]) == 1
    for names in phases.values():
        assert not any(Region.objects.get(name=n).geo_pair.name in names for n in names)
    spans = run_intervals(runs.select_related("scale_set__region__geo_pair"))
    for a in spans:
        for b in spans:
            if a[0].scale_set.region.geo_pair_id == b[0].scale_set.region_id:
                assert not overlap(a, b), (a[0], b[0])
    # a phase starts only after the previous one finished
    ends = {p: max(s.ended_at for s in steps if s.phase == p) for p in phases}
    starts = {p: min(s.started_at for s in steps if s.phase == p) for p in phases}
    assert all(starts[p] >= ends[p - 1] for p in phases if p)


def test_inside_a_region_zones_upgrade_one_at_a_time_r_avail_1(drive_fleet):
    where = factories.region("solo")
    auto_set("zonal-1", where, capacity=9, zones=["1", "2", "3"])
    auto_set("zonal-2", where, capacity=6, zones=["1", "2", "3"])
    publish_new(where)
    drive_fleet()

    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    assert runs.count() == 6  # two sets × three zones
    zone_of = {
        run.pk: set(run.outcomes.exclude(status="Skipped").values_list("instance__zone", flat=True)) for run in runs
    }
    assert all(len(z) == 1 for z in zone_of.values())
    spans = run_intervals(runs)
    for a in spans:
        for b in spans:
            if zone_of[a[0].pk] != zone_of[b[0].pk]:
                assert not overlap(a, b), "two zones of one region upgraded at once"
    assert set(Instance.objects.values_list("os_image", flat=True)) == {NEW_KEY}


def test_a_bad_version_halts_in_the_first_phase_and_rolls_back_r_avail_1(drive_fleet):
    fleet_of_twelve()
    FaultProfile.objects.create(target=NEW_KEY, never_healthy_share=1.0)
    publish_new(*Region.objects.all())
    drive_fleet()

    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.HALTED
    first = RolloutStep.objects.filter(phase=0).select_related("region")
    assert "Phase 1" in rollout.halt_reason
    assert first[0].region.name in rollout.halt_reason
    assert StepStatus.FAILED in {s.status for s in first}
    assert not RolloutStep.objects.filter(phase__gt=0).exclude(status=StepStatus.PENDING).exists()
    runs = UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS)
    assert {r.scale_set.region_id for r in runs} == {first[0].region_id}
    assert all(r.status == RunStatus.FAULTED for r in runs)
    assert sum(r.rolled_back_count for r in runs) > 0
    # every instance is back on (or still on) the old image and healthy
    assert set(Instance.objects.values_list("os_image", flat=True)) == {OLD_KEY}
    assert set(Instance.objects.values_list("health_state", flat=True)) == {"Healthy"}


def test_the_rollout_waits_for_the_trigger_delay_r_auto_2(drive_fleet, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 1800
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    scale_set = auto_set("web", factories.region())
    published = clock.now()
    publish_new(scale_set.region)
    drive_fleet(until=lambda: UpgradeRun.objects.exists())
    run = UpgradeRun.objects.get()
    assert run.started_at >= published + dt.timedelta(seconds=1800)
    assert run.started_at < published + dt.timedelta(seconds=1805)


def test_the_first_rollout_after_enabling_waits_the_first_delay_r_auto_2(drive_fleet, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 60
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 3 * 3600
    scale_set = auto_set("web", factories.region())
    enabled = ScaleSet.objects.get(pk=scale_set.pk).automatic_os_upgrade_enabled_at
    publish_new(scale_set.region)
    drive_fleet(until=lambda: UpgradeRun.objects.exists())
    first = UpgradeRun.objects.get()
    assert first.started_at >= enabled + dt.timedelta(hours=3)
    drive_fleet()
    # a later version waits only the usual delay
    published = clock.now()
    factories.publish("18.04.202503030", scale_set.region, at=published)
    drive_fleet(until=lambda: UpgradeRun.objects.count() == 2)
    second = UpgradeRun.objects.order_by("started_at").last()
    assert published + dt.timedelta(seconds=60) <= second.started_at < published + dt.timedelta(seconds=65)


def test_trigger_delays_are_scaled_by_time_scale(drive_fleet, settings):
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 1800
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    auto_set("web", factories.region())
    publish_new(factories.region())
    rollouts.automatic_upgrades_scan()
    settings.TIME_SCALE = 60.0
    assert Rollout.objects.get().not_before - clock.now() == dt.timedelta(seconds=1800)
    Rollout.objects.all().delete()
    rollouts.automatic_upgrades_scan()
    assert Rollout.objects.get().not_before - clock.now() == dt.timedelta(seconds=30)


def test_a_version_of_another_sku_never_changes_the_sku_r_auto_3(drive_fleet):
    scale_set = auto_set("web", factories.region())
    factories.publish("22.04.202601010", scale_set.region, at=clock.now(), image_sku="22_04-lts")
    drive_fleet()
    assert not Rollout.objects.exists()
    assert set(Instance.objects.values_list("os_image", flat=True)) == {OLD_KEY}
    publish_new(scale_set.region)
    drive_fleet()
    scale_set.refresh_from_db()
    assert (scale_set.image_publisher, scale_set.image_offer, scale_set.image_sku) == (
        "Canonical",
        "UbuntuServer",
        "18.04-LTS",
    )
    assert set(Instance.objects.values_list("os_image", flat=True)) == {NEW_KEY}


def test_in_manual_mode_only_instances_on_the_latest_model_upgrade_r_auto_4(drive_fleet):
    scale_set = auto_set("web", factories.region(), upgrade_mode=UpgradeMode.MANUAL)
    update_model(scale_set=scale_set, changes={"vm_size": "Standard_D4s_v3"})
    Instance.objects.filter(scale_set=scale_set, instance_id__in=[0, 1]).update(model_version=2)
    publish_new(scale_set.region)
    drive_fleet()
    on_new = set(Instance.objects.filter(os_image=NEW_KEY).values_list("instance_id", flat=True))
    assert on_new == {0, 1}
    assert rollouts.os_image_needs() == {}  # the rest waits for the operator (shown on the page)


def test_disabling_stops_future_automatic_runs_r_auto_5(drive_fleet, settings):
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    scale_set = auto_set("web", factories.region())
    publish_new(scale_set.region)
    drive_fleet(until=lambda: Rollout.objects.exists())
    automatic_os_upgrade_set(scale_set=scale_set, enabled=False)
    drive_fleet()
    assert not UpgradeRun.objects.exists()
    assert set(Instance.objects.values_list("os_image", flat=True)) == {OLD_KEY}
    assert set(RolloutTarget.objects.values_list("status", flat=True)) <= {TargetStatus.SKIPPED}


def test_a_rollout_waits_for_an_operators_run_on_the_set_r_one_1(drive_fleet, settings):
    settings.AUTOMATIC_OS_UPGRADE_FIRST_DELAY_SECONDS = 0
    settings.AUTOMATIC_UPGRADE_DELAY_SECONDS = 0
    from upgrades.services import run_start

    scale_set = auto_set("web", factories.region(), capacity=10)
    publish_new(scale_set.region)
    mine = run_start(scale_set=scale_set, kind=Kind.ROLLING_MODEL, instance_ids=[0])
    drive_fleet(until=lambda: RolloutTarget.objects.filter(message__contains=f"#{mine.pk}").exists())
    drive_fleet()
    assert UpgradeRun.objects.filter(kind=Kind.AUTOMATIC_OS, status=RunStatus.COMPLETED).count() == 1
    assert Rollout.objects.get().status == RolloutStatus.COMPLETED


def test_a_region_published_later_joins_as_a_later_phase(drive_fleet):
    first, second = factories.region("first"), factories.region("second")
    auto_set("a", first)
    auto_set("b", second)
    publish_new(first)
    drive_fleet()
    assert Rollout.objects.get().status == RolloutStatus.COMPLETED
    publish_new(second)
    drive_fleet()
    rollout = Rollout.objects.get()
    assert rollout.status == RolloutStatus.COMPLETED
    assert list(rollout.steps.values_list("phase", "region__name").distinct()) == [(0, "first"), (1, "second")]
    assert set(Instance.objects.values_list("os_image", flat=True)) == {NEW_KEY}


# --- Gallery images: replication and excludeFromLatest (R-AUTO-2) -----------------------------


def gallery_fleet():
    from fleet.models import Gallery, GalleryImage

    east, west = factories.region("east"), factories.region("west")
    gallery = Gallery.objects.create(subscription_id=factories.SUBSCRIPTION, resource_group="rg", name="g", region=east)
    image = GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")
    services.gallery_image_version_publish(image=image, name="1.0.0", target_regions=[east, west])
    sets = [
        factories.scale_set(
            name,
            4,
            where=where,
            image_source="gallery",
            gallery_image=image,
            image_version="latest",
            zones=[],
            extensions=[APP_HEALTH_HTTP],
            enable_automatic_os_upgrade=True,
        )
        for name, where in (("in-east", east), ("in-west", west))
    ]
    return image, east, west, sets


def test_a_gallery_version_replicated_to_one_region_upgrades_only_sets_there(drive_fleet):
    image, east, west, (in_east, in_west) = gallery_fleet()
    services.gallery_image_version_publish(image=image, name="1.1.0", target_regions=[east], replication_seconds=600)
    drive_fleet()
    new = "gallery:g/app:1.1.0"
    assert set(Instance.objects.filter(scale_set=in_east).values_list("os_image", flat=True)) == {new}
    assert set(Instance.objects.filter(scale_set=in_west).values_list("os_image", flat=True)) == {"gallery:g/app:1.0.0"}
    run = UpgradeRun.objects.get()
    assert run.started_at >= Rollout.objects.get().created_at  # only once replication completed


def test_an_exclude_from_latest_version_never_rolls_out(drive_fleet):
    image, east, west, sets = gallery_fleet()
    services.gallery_image_version_publish(
        image=image, name="2.0.0", target_regions=[east, west], exclude_from_latest=True
    )
    drive_fleet()
    assert not Rollout.objects.exists()
    assert not UpgradeRun.objects.exists()
    assert set(Instance.objects.values_list("os_image", flat=True)) == {"gallery:g/app:1.0.0"}


# --- the beat's tick stays cheap ---------------------------------------------------------------


def scan_queries(count: int) -> tuple[int, int]:
    """Queries of a scan that finds nothing new, and of one that covers a newly latest
    version, on a fleet of `count` sets in two regions."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    regions = [factories.region("one"), factories.region("two")]
    for n in range(count):
        auto_set(f"set-{n}", regions[n % 2])
    rollouts.automatic_upgrades_scan()
    with CaptureQueriesContext(connection) as idle:
        rollouts.automatic_upgrades_scan()
    publish_new(*regions)
    rollouts.automatic_upgrades_scan()
    with CaptureQueriesContext(connection) as covered:
        rollouts.automatic_upgrades_scan()
    return len(idle), len(covered)


@pytest.mark.parametrize("count", [2, 12])
def test_the_scan_costs_the_same_whatever_the_number_of_sets(count):
    idle, covered = scan_queries(count)
    assert (idle, covered) == (5, 11)


def test_the_demo_fleet_opens_with_automatic_rollouts_to_watch():
    from fleet.demo import demo_fleet_load

    demo_fleet_load()
    rollouts.automatic_upgrades_scan()
    targets = set(Rollout.objects.values_list("kind", "target"))
    assert ("OSImage", "platform:Canonical/0001-com-ubuntu-server-jammy/22_04-LTS:22.04.202411050") in targets
    assert ("OSImage", "platform:MicrosoftWindowsServer/WindowsServer/2019-Datacenter:17763.6532.241101") in targets
    assert ("Extension", "Microsoft.GuestConfiguration.ConfigurationforLinux@1.27") in targets
    assert ("Extension", "Microsoft.Azure.Monitoring.DependencyAgent.DependencyAgentLinux@9.11") in targets
    assert all(r.status == RolloutStatus.WAITING for r in Rollout.objects.all())  # the trigger delay


def test_a_halted_rollout_is_superseded_by_a_newer_versions_rollout(drive_fleet):
    scale_set = auto_set("web", factories.region())
    FaultProfile.objects.create(target=NEW_KEY, never_healthy_share=1.0)
    publish_new(scale_set.region)
    drive_fleet()
    halted = Rollout.objects.get()
    assert halted.status == RolloutStatus.HALTED
    factories.publish("18.04.202503030", scale_set.region, at=clock.now())
    drive_fleet()
    halted.refresh_from_db()
    assert halted.status == RolloutStatus.SUPERSEDED
    assert "Superseded by platform:Canonical/UbuntuServer/18.04-LTS:18.04.202503030" in halted.halt_reason
    newer = Rollout.objects.exclude(pk=halted.pk).get()
    assert newer.status == RolloutStatus.COMPLETED
    assert set(Instance.objects.values_list("os_image", flat=True)) == {newer.target}
