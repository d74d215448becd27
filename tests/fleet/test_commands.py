"""The management commands (SPEC 7, CLI): each prints its result as JSON and refuses bad input
with a clear message, one line per problem, naming the field, and a non-zero exit.

Exit codes: when a command runs from the command line, Django prints a CommandError as
"CommandError: <message>" on stderr and exits with the error's returncode, 1 by default
(BaseCommand.run_from_argv). So `pytest.raises(CommandError)` with returncode 1 is the exit
code; one test runs a command in its own process to show it end to end.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from fleet import clock, services
from fleet.auto_upgrade import CUSTOM_IMAGE_REFUSED
from fleet.models import (
    ExtensionVersion,
    Gallery,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    ImagePublication,
    PlatformImageVersion,
    Region,
    ScaleSet,
    SupportedOsSku,
)
from fleet.selectors import latest_gallery_version, latest_platform_version
from tests import factories, processes
from upgrades import rollouts
from upgrades.models import Rollout, RolloutKind, RolloutStatus

PROBE = {"health_probe_protocol": "tcp", "health_probe_port": 80}
NOW = "2026-06-01T12:00:00Z"  # the frozen clock, as the JSON spells it

NO_HEALTH_SOURCE = (
    "Automatic OS upgrades need a health source: add a load-balancer health probe or the Application Health extension."
)
PINNED = (
    f"Automatic OS upgrades need image version 'latest', not a pinned version ({factories.OLD_VERSION}): "
    "set the image version to latest."
)


def run(*args: str) -> Any:
    """Run a command; its stdout, parsed as JSON."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def refused(*args: str) -> list[str]:
    """Run a command that must fail with exit code 1; the lines of its message."""
    out = io.StringIO()
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=out)
    assert caught.value.returncode == 1
    assert out.getvalue() == ""  # nothing on stdout: a script reading the JSON reads nothing
    return str(caught.value).splitlines()


@pytest.fixture
def regions(db) -> dict[str, Region]:
    return {name: factories.region(name) for name in ("eastus", "westus", "centralus")}


# --- publish_image -----------------------------------------------------------------------------


def test_publish_image_publishes_in_each_region_and_prints_the_version(regions, frozen_clock):
    printed = run(
        "publish_image",
        "--publisher=Canonical",
        "--offer=UbuntuServer",
        "--sku=18.04-LTS",
        "--version=18.04.202402020",
        "--regions=westus, eastus",
    )
    assert printed == {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": "18.04.202402020",
        "publishedIn": [{"location": "eastus", "publishedAt": NOW}, {"location": "westus", "publishedAt": NOW}],
        "faults": None,
    }
    for region in (regions["eastus"], regions["westus"]):
        found = latest_platform_version(
            publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS", region_id=region.pk
        )
        assert found == "18.04.202402020"


def test_publish_image_again_adds_regions_and_keeps_the_first_publication_time(regions, frozen_clock):
    image = ["publish_image", "--publisher=Canonical", "--offer=UbuntuServer", "--sku=18.04-LTS", "--version=1.2.3"]
    run(*image, "--regions=eastus")
    frozen_clock.advance(3600)
    printed = run(*image, "--regions=eastus,westus")
    assert printed["publishedIn"] == [
        {"location": "eastus", "publishedAt": NOW},
        {"location": "westus", "publishedAt": "2026-06-01T13:00:00Z"},
    ]
    assert PlatformImageVersion.objects.count() == 1


def test_publish_image_refuses_an_unknown_region_by_name_and_publishes_nowhere(regions):
    lines = refused(
        "publish_image", "--publisher=P", "--offer=O", "--sku=S", "--version=1.0", "--regions=eastus,mars,westus2"
    )
    assert lines == ["--regions: unknown region mars, westus2 (known regions: centralus, eastus, westus)."]
    assert not PlatformImageVersion.objects.exists()


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1.2a", "version: '1.2a' is not a version: use whole numbers separated by dots, like 1.0.0 or "),
        ("latest", "version: 'latest' is resolved, never published."),
    ],
)
def test_publish_image_refuses_an_invalid_version_naming_the_field(regions, version, message):
    lines = refused(
        "publish_image", "--publisher=P", "--offer=O", "--sku=S", f"--version={version}", "--regions=eastus"
    )
    assert lines[0] == "The image version was not published:"
    assert lines[1].startswith(message)
    assert len(lines) == 2
    assert not ImagePublication.objects.exists()


# --- publish_gallery_image_version -------------------------------------------------------------


@pytest.fixture
def gallery_image(regions) -> GalleryImage:
    gallery = Gallery.objects.create(
        subscription_id=factories.SUBSCRIPTION, resource_group="rg-images", name="shared", region=regions["eastus"]
    )
    return GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")


def test_publish_gallery_image_version_replicates_to_each_target_region(gallery_image, frozen_clock, time_scale_1):
    printed = run(
        "publish_gallery_image_version",
        "--gallery=shared",
        "--image=app",
        "--version=1.1.0",
        "--target-regions=eastus,westus",
        "--replication-seconds=60",
    )
    assert printed == {
        "id": f"{gallery_image.resource_id}/versions/1.1.0",
        "name": "1.1.0",
        "type": "Microsoft.Compute/galleries/images/versions",
        "location": "eastus",
        "properties": {
            "publishingProfile": {
                "targetRegions": [
                    {"name": "eastus", "regionalReplicaCount": 1},
                    {"name": "westus", "regionalReplicaCount": 1},
                ],
                "excludeFromLatest": False,
                "publishedDate": NOW,
            },
            "provisioningState": "Succeeded",
            "replicationStatus": {
                "aggregatedState": "InProgress",
                "summary": [
                    {"region": "eastus", "state": "Replicating", "progress": 0},
                    {"region": "westus", "state": "Replicating", "progress": 0},
                ],
            },
        },
    }
    eastus = Region.objects.get(name="eastus")
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=eastus.pk) is None
    services.gallery_replication_advance(clock.now() + dt.timedelta(seconds=60))
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=eastus.pk) == "1.1.0"


def test_publish_gallery_image_version_excluded_from_latest_never_becomes_latest(gallery_image):
    printed = run(
        "publish_gallery_image_version",
        "--gallery=SHARED",
        "--resource-group=rg-images",
        "--image=app",
        "--version=2.0.0",
        "--target-regions=westus",
        "--exclude-from-latest",
    )
    assert printed["properties"]["publishingProfile"]["excludeFromLatest"] is True
    assert printed["properties"]["replicationStatus"] == {
        "aggregatedState": "Completed",
        "summary": [{"region": "westus", "state": "Completed", "progress": 100}],
    }
    westus = Region.objects.get(name="westus")
    assert latest_gallery_version(gallery_image_id=gallery_image.pk, region_id=westus.pk) is None


@pytest.mark.parametrize(
    ("options", "lines"),
    [
        (["--gallery=private"], ["No gallery named private."]),
        (["--image=db"], ["Gallery shared has no image definition db (its images: app)."]),
        (["--resource-group=rg-other"], ["No gallery named shared in resource group rg-other."]),
        (
            ["--version=1.0"],
            [
                "The gallery image version was not created:",
                "version: A gallery image version is Major.Minor.Patch, like 1.0.0.",
            ],
        ),
        (["--target-regions=eastus,mars"], ["--target-regions: unknown region mars (known regions: "]),
        (["--target-regions= , "], ["--target-regions: give at least one region, like eastus or eastus,westus."]),
        (["--replication-seconds=-5"], ["--replication-seconds: -5.0 is not a number of seconds of 0 or more."]),
    ],
)
def test_publish_gallery_image_version_refuses_bad_input_clearly(gallery_image, options, lines):
    given = {"--gallery": "shared", "--image": "app", "--version": "1.0.0", "--target-regions": "eastus"}
    given.update(option.split("=", 1) for option in options)
    found = refused("publish_gallery_image_version", *(f"{name}={value}" for name, value in given.items()))
    assert len(found) == len(lines)
    for line, expected in zip(found, lines, strict=True):
        assert line.startswith(expected)
    assert not GalleryImageVersion.objects.exists()


def test_publish_gallery_image_version_refuses_a_version_that_exists(gallery_image):
    command = ["publish_gallery_image_version", "--gallery=shared", "--image=app", "--version=1.0.0"]
    run(*command, "--target-regions=eastus")
    assert refused(*command, "--target-regions=westus") == [
        "The gallery image version was not created:",
        "Gallery image version with this Image and Name already exists.",
    ]
    assert GalleryImageReplica.objects.get().region.name == "eastus"


def test_publish_gallery_image_version_asks_for_the_resource_group_when_the_name_is_not_unique(gallery_image):
    Gallery.objects.create(
        subscription_id=factories.SUBSCRIPTION,
        resource_group="rg-b",
        name="shared",
        region=gallery_image.gallery.region,
    )
    lines = refused(
        "publish_gallery_image_version", "--gallery=shared", "--image=app", "--version=1.0.0", "--target-regions=eastus"
    )
    assert lines == [
        f"Several galleries are named shared ({factories.SUBSCRIPTION}/rg-b, {factories.SUBSCRIPTION}/rg-images): "
        "give --resource-group."
    ]


# --- publish_extension_version -----------------------------------------------------------------


def test_publish_extension_version_releases_it_once(db, frozen_clock):
    command = ["publish_extension_version", "--publisher=Microsoft.ManagedServices", "--type=ApplicationHealthLinux"]
    printed = run(*command, "--version=2.1")
    assert printed == {
        "publisher": "Microsoft.ManagedServices",
        "type": "ApplicationHealthLinux",
        "version": "2.1",
        "publishedAt": NOW,
        "key": "Microsoft.ManagedServices.ApplicationHealthLinux@2.1",
        "faults": None,
    }
    frozen_clock.advance(60)
    assert run(*command, "--version=2.1") == printed  # releasing again changes nothing
    assert ExtensionVersion.objects.get().key == "Microsoft.ManagedServices.ApplicationHealthLinux@2.1"


def test_publish_extension_version_refuses_bad_fields_one_line_each(db):
    lines = refused("publish_extension_version", "--publisher=", "--type=T", "--version=two")
    assert lines[0] == "The extension version was not released:"
    assert sorted(line.partition(":")[0] for line in lines[1:]) == ["publisher", "version"]
    assert "publisher: This field cannot be blank." in lines
    assert not ExtensionVersion.objects.exists()


def test_publish_extension_version_needs_every_option(db):
    with pytest.raises(CommandError, match="--version"):
        call_command("publish_extension_version", "--publisher=P", "--type=T")


# --- region_pair -------------------------------------------------------------------------------


def test_region_pair_pairs_both_ways_and_unpairs_the_old_partners(regions):
    assert run("region_pair", "--region=eastus", "--partner=westus") == [
        {"name": "eastus", "displayName": "Eastus", "availabilityZones": ["1", "2", "3"],
         "metadata": {"pairedRegion": [{"name": "westus"}]}},
        {"name": "westus", "displayName": "Westus", "availabilityZones": ["1", "2", "3"],
         "metadata": {"pairedRegion": [{"name": "eastus"}]}},
    ]  # fmt: skip
    printed = run("region_pair", "--region=centralus", "--partner=eastus")
    pairs = {r["name"]: [p["name"] for p in r["metadata"]["pairedRegion"]] for r in printed}
    assert pairs == {"centralus": ["eastus"], "eastus": ["centralus"], "westus": []}
    assert run("region_pair", "--region=eastus", "--none") == [
        {"name": "centralus", "displayName": "Centralus", "availabilityZones": ["1", "2", "3"],
         "metadata": {"pairedRegion": []}},
        {"name": "eastus", "displayName": "Eastus", "availabilityZones": ["1", "2", "3"],
         "metadata": {"pairedRegion": []}},
    ]  # fmt: skip
    assert not Region.objects.filter(geo_pair__isnull=False).exists()


def test_region_pair_refuses_a_region_paired_with_itself_or_unknown(regions):
    assert refused("region_pair", "--region=eastus", "--partner=EastUS") == [
        "The regions were not paired:",
        "A region cannot be its own geo pair.",
    ]
    assert refused("region_pair", "--region=atlantis", "--none") == [
        "--region: unknown region atlantis (known regions: centralus, eastus, westus)."
    ]
    assert refused("region_pair", "--region=eastus", "--partner=westus,centralus") == [
        "--partner: give one region, not 2."
    ]
    with pytest.raises(CommandError, match="one of the arguments --partner --none is required"):
        call_command("region_pair", "--region=eastus")


# --- vmss_automatic_os_upgrade (R-AUTO-1, R-AUTO-5) ---------------------------------------------


def enable(name: str, *more: str) -> list[str]:
    return ["vmss_automatic_os_upgrade", "-g", "rg-test", "-n", name, "--enable", *more]


def test_enabling_on_a_set_that_meets_r_auto_1_prints_its_upgrade_policy(db):
    scale_set = factories.scale_set(capacity=2, **PROBE)
    printed = run(*enable("web", "--disable-automatic-rollback", "true"))
    assert printed == {
        "id": scale_set.resource_id,
        "name": "web",
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": "eastus",
        "properties": {
            "upgradePolicy": {
                "mode": "Manual",
                "automaticOSUpgradePolicy": {
                    "enableAutomaticOSUpgrade": True,
                    "disableAutomaticRollback": True,
                    "useRollingUpgradePolicy": False,
                    "osRollingUpgradeDeferral": False,
                },
            }
        },
    }
    scale_set.refresh_from_db()
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (True, True)


def test_names_are_case_insensitive_and_the_subscription_narrows(db):
    factories.scale_set(capacity=2, **PROBE)
    assert run("vmss_automatic_os_upgrade", "-g", "RG-TEST", "-n", "Web", "--enable")["name"] == "web"
    lines = refused(*enable("web"), "--subscription", "00000000-0000-0000-0000-000000000000")
    assert lines == [
        "No scale set named web in resource group rg-test in subscription 00000000-0000-0000-0000-000000000000."
    ]


def test_r_auto_1_enabling_on_a_custom_image_set_is_refused_in_one_line(db):
    factories.scale_set(
        "legacy", 2, image_source="custom", custom_image_uri="https://x.blob.core.windows.net/v/a.vhd", **PROBE
    )
    assert refused(*enable("legacy")) == [
        "Automatic OS upgrades were not turned on for legacy:",
        f"enableAutomaticOSUpgrade: {CUSTOM_IMAGE_REFUSED}",
    ]
    assert not ScaleSet.objects.get(name="legacy").enable_automatic_os_upgrade


def test_r_auto_1_enabling_on_a_set_without_a_health_source_is_refused(db):
    factories.scale_set(capacity=2)
    assert refused(*enable("web")) == [
        "Automatic OS upgrades were not turned on for web:",
        f"enableAutomaticOSUpgrade: {NO_HEALTH_SOURCE}",
    ]


def test_r_auto_1_every_violation_is_its_own_line_and_nothing_is_saved(db):
    factories.scale_set(capacity=2, image_version=factories.OLD_VERSION)  # pinned, no health source
    assert refused(*enable("web", "--disable-automatic-rollback=true")) == [
        "Automatic OS upgrades were not turned on for web:",
        f"enableAutomaticOSUpgrade: {PINNED}",
        f"enableAutomaticOSUpgrade: {NO_HEALTH_SOURCE}",
    ]
    scale_set = ScaleSet.objects.get(name="web")
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (False, False)


def test_r_auto_5_disabling_always_works(db):
    scale_set = factories.scale_set(capacity=2, enable_automatic_os_upgrade=True, **PROBE)
    ScaleSet.objects.filter(pk=scale_set.pk).update(health_probe_protocol="")  # no longer meets R-AUTO-1
    printed = run("vmss_automatic_os_upgrade", "-g", "rg-test", "-n", "web", "--disable")
    assert printed["properties"]["upgradePolicy"]["automaticOSUpgradePolicy"]["enableAutomaticOSUpgrade"] is False
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade


def test_vmss_automatic_os_upgrade_refuses_bad_options(db):
    factories.scale_set(capacity=1, **PROBE)
    assert refused("vmss_automatic_os_upgrade", "-g", "rg-test", "-n", "nope", "--enable") == [
        "No scale set named nope in resource group rg-test."
    ]
    with pytest.raises(CommandError, match="--disable-automatic-rollback: 'maybe' is not true or false"):
        call_command(*enable("web", "--disable-automatic-rollback=maybe"))
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command(*enable("web", "--disable"))
    with pytest.raises(CommandError, match="one of the arguments --enable --disable is required"):
        call_command("vmss_automatic_os_upgrade", "-g", "rg-test", "-n", "web")
    assert not ScaleSet.objects.get().enable_automatic_os_upgrade


@pytest.mark.django_db(transaction=True)
def test_r_auto_1_a_refusal_from_the_command_line_exits_1_with_one_line_per_violation():
    # An earlier transactional test may have emptied the seeded SKU table: the supported SKU
    # must be there, or a third violation would be reported.
    SupportedOsSku.objects.get_or_create(publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS")
    factories.scale_set(capacity=2, image_version=factories.OLD_VERSION)
    finished = subprocess.run(
        [sys.executable, "manage.py", *enable("web")],
        cwd=processes.BASE_DIR,
        env={**os.environ, "DATABASE_URL": processes.test_database_url()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 1, finished.stderr
    assert finished.stdout == ""
    assert finished.stderr.splitlines() == [
        "CommandError: Automatic OS upgrades were not turned on for web:",
        f"enableAutomaticOSUpgrade: {PINNED}",
        f"enableAutomaticOSUpgrade: {NO_HEALTH_SOURCE}",
    ]
    assert not ScaleSet.objects.get().enable_automatic_os_upgrade


# --- rollouts ------------------------------------------------------------------------------------


def test_rollouts_lists_every_rollout_newest_first_and_active_ones_on_request(db, frozen_clock):
    factories.outdated_scale_set(capacity=4, enable_automatic_os_upgrade=True)
    (os_rollout_id,) = rollouts.automatic_upgrades_scan()
    frozen_clock.advance(60)
    halted = Rollout.objects.create(
        kind=RolloutKind.EXTENSION,
        target="Microsoft.ManagedServices.ApplicationHealthLinux@2.1",
        status=RolloutStatus.HALTED,
        created_at=clock.now(),
        not_before=clock.now(),
        halted_at=clock.now(),
        halt_reason="Phase 1, eastus: web: run #7 Faulted: 2 instance(s) failed.",
        retry_at=clock.now() + dt.timedelta(days=3),
    )
    listed = run("rollouts")
    assert [r["id"] for r in listed] == [halted.pk, os_rollout_id]
    assert listed[0] == {
        "id": halted.pk,
        "kind": "Extension",
        "target": "Microsoft.ManagedServices.ApplicationHealthLinux@2.1",
        "status": "Halted",
        "phaseCount": 0,
        "attempts": 1,
        "createdAt": "2026-06-01T12:01:00Z",
        "notBefore": "2026-06-01T12:01:00Z",
        "endedAt": None,
        "haltedAt": "2026-06-01T12:01:00Z",
        "haltReason": "Phase 1, eastus: web: run #7 Faulted: 2 instance(s) failed.",
        "retryAt": "2026-06-04T12:01:00Z",
    }
    os_rollout = listed[1]
    assert (os_rollout["kind"], os_rollout["target"], os_rollout["status"]) == ("OSImage", factories.NEW_KEY, "Waiting")
    assert (os_rollout["phaseCount"], os_rollout["haltReason"], os_rollout["retryAt"]) == (1, None, None)
    assert [r["id"] for r in run("rollouts", "--active")] == [os_rollout_id]


def test_rollouts_prints_an_empty_list_when_there_is_none(db):
    assert run("rollouts") == []
    assert run("rollouts", "--active") == []
