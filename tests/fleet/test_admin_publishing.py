"""Admin (SPEC 6): staff publish image versions, gallery image versions and extension versions
through the same services as the CLI; rollouts and runs are read-only; the admin is staff-only."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse

from fleet import clock, services
from fleet.models import (
    ExtensionVersion,
    Gallery,
    GalleryImage,
    GalleryImageVersion,
    ImagePublication,
    PlatformImageVersion,
    Region,
    ReplicationState,
)
from tests import factories
from upgrades import rollouts
from upgrades.models import Rollout, UpgradeRun

pytestmark = pytest.mark.django_db

EMPTY_PUBLISHED_AT = {"published_at_0": "", "published_at_1": ""}


@pytest.fixture
def bare_staff_client() -> Client:
    """A staff member with no model permission at all."""
    client = Client()
    client.force_login(factories.user("sam", "staff"))
    return client


@pytest.fixture
def eastus() -> Region:
    return factories.region("eastus")


@pytest.fixture
def westus() -> Region:
    return factories.region("westus")


@pytest.fixture
def gallery_image(eastus: Region) -> GalleryImage:
    gallery = Gallery.objects.create(subscription_id="s", resource_group="rg", name="shared", region=eastus)
    return GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("extensionversion", ["publisher", "type", "version", "published_at_0"]),
        ("galleryimageversion", ["image", "name", "exclude_from_latest", "target_regions", "replication_seconds"]),
        ("platformimageversion", ["publisher", "offer", "sku", "version", "publish_in", "published_at_0"]),
    ],
)
def test_the_publishing_pages_ask_for_what_the_services_take(staff_client, gallery_image, eastus, model, fields):
    html = staff_client.get(reverse(f"admin:fleet_{model}_add")).content.decode()
    for field in fields:
        assert f'name="{field}"' in html
    assert staff_client.get(reverse(f"admin:fleet_{model}_changelist")).status_code == 200


# --- extension versions ------------------------------------------------------------------------


def test_staff_release_an_extension_version_through_the_add_page(staff_client, frozen_clock):
    response = staff_client.post(
        reverse("admin:fleet_extensionversion_add"),
        {"publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux", "version": "2.1"}
        | EMPTY_PUBLISHED_AT,
    )
    assert response.status_code == 302, response.content.decode()
    release = ExtensionVersion.objects.get()
    assert (release.key, release.published_at) == ("Microsoft.ManagedServices.ApplicationHealthLinux@2.1", clock.now())
    listed = staff_client.get(reverse("admin:fleet_extensionversion_changelist"), {"q": "ApplicationHealth"})
    assert "ApplicationHealthLinux" in listed.content.decode()


def test_an_extension_version_can_be_released_at_a_given_time_and_is_never_edited(staff_client):
    add = reverse("admin:fleet_extensionversion_add")
    fields = {"publisher": "P", "type": "T", "version": "1.0"}
    when = {"published_at_0": "2026-05-01", "published_at_1": "08:30:00"}
    assert staff_client.post(add, fields | when).status_code == 302
    release = ExtensionVersion.objects.get()
    assert release.published_at == dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
    change = reverse("admin:fleet_extensionversion_change", args=[release.pk])
    assert staff_client.get(change).status_code == 200  # shown, read-only
    assert staff_client.post(change, fields | {"version": "9.9"} | when).status_code == 403
    assert ExtensionVersion.objects.get().version == "1.0"


def test_a_bad_or_repeated_extension_version_is_shown_on_the_form(staff_client):
    add = reverse("admin:fleet_extensionversion_add")
    page = staff_client.post(add, {"publisher": "P", "type": "T", "version": "two"} | EMPTY_PUBLISHED_AT)
    assert page.status_code == 200
    assert "is not a version" in page.content.decode()
    assert not ExtensionVersion.objects.exists()
    services.extension_version_publish(publisher="P", type="T", version="1.0")
    page = staff_client.post(add, {"publisher": "P", "type": "T", "version": "1.0"} | EMPTY_PUBLISHED_AT)
    assert page.status_code == 200
    assert "already exists" in page.content.decode()
    assert ExtensionVersion.objects.count() == 1


# --- gallery image versions --------------------------------------------------------------------


def test_staff_add_a_gallery_image_version_and_its_replicas_are_created(
    staff_client, gallery_image, eastus, westus, frozen_clock, time_scale_1
):
    response = staff_client.post(
        reverse("admin:fleet_galleryimageversion_add"),
        {
            "image": gallery_image.pk,
            "name": "1.1.0",
            "target_regions": [eastus.pk, westus.pk],
            "replication_seconds": "60",
        },
    )
    assert response.status_code == 302, response.content.decode()
    version = GalleryImageVersion.objects.get()
    assert (version.name, version.exclude_from_latest, version.published_at) == ("1.1.0", False, clock.now())
    replicas = {r.region.name: (r.state, r.completes_at) for r in version.replicas.select_related("region")}
    due = clock.now() + dt.timedelta(seconds=60)
    assert replicas == {"eastus": (ReplicationState.REPLICATING, due), "westus": (ReplicationState.REPLICATING, due)}
    page = staff_client.get(reverse("admin:fleet_galleryimageversion_change", args=[version.pk]))
    assert page.status_code == 200
    assert "Replicating" in page.content.decode()
    listed = staff_client.get(reverse("admin:fleet_galleryimageversion_changelist")).content.decode()
    assert "eastus: Replicating, westus: Replicating" in listed


def test_a_gallery_image_version_excluded_from_latest_replicates_at_once_by_default(
    staff_client, gallery_image, eastus
):
    response = staff_client.post(
        reverse("admin:fleet_galleryimageversion_add"),
        {
            "image": gallery_image.pk,
            "name": "2.0.0",
            "exclude_from_latest": "on",
            "target_regions": [eastus.pk],
            "replication_seconds": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()
    version = GalleryImageVersion.objects.get()
    assert version.exclude_from_latest
    assert list(version.replicas.values_list("state", flat=True)) == [ReplicationState.COMPLETED]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "1.0"}, "A gallery image version is Major.Minor.Patch, like 1.0.0."),
        ({"target_regions": []}, "This field is required."),
        ({"replication_seconds": "-1"}, "Ensure this value is greater than or equal to 0.0."),
    ],
)
def test_a_bad_gallery_image_version_is_shown_on_the_form_and_nothing_is_written(
    staff_client, gallery_image, eastus, changes, message
):
    fields = {"image": gallery_image.pk, "name": "1.0.0", "target_regions": [eastus.pk], "replication_seconds": "0"}
    page = staff_client.post(reverse("admin:fleet_galleryimageversion_add"), fields | changes)
    assert page.status_code == 200
    assert message in page.content.decode()
    assert not GalleryImageVersion.objects.exists()


# --- platform image versions -------------------------------------------------------------------


def test_adding_a_platform_image_version_publishes_it_and_again_adds_regions(
    staff_client, eastus, westus, frozen_clock
):
    add = reverse("admin:fleet_platformimageversion_add")
    image = {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "18.04.202402020"}
    assert staff_client.post(add, image | {"publish_in": [eastus.pk]} | EMPTY_PUBLISHED_AT).status_code == 302
    first_time = clock.now()
    frozen_clock.advance(3600)
    # Publishing the same version again, in more regions, goes through like the service: no "already exists".
    response = staff_client.post(add, image | {"publish_in": [eastus.pk, westus.pk]} | EMPTY_PUBLISHED_AT)
    assert response.status_code == 302, response.content.decode()
    version = PlatformImageVersion.objects.get()
    published = dict(ImagePublication.objects.filter(image_version=version).values_list("region__name", "published_at"))
    assert published == {"eastus": first_time, "westus": clock.now()}
    page = staff_client.get(reverse("admin:fleet_platformimageversion_change", args=[version.pk]))
    assert page.status_code == 200  # the version's page still edits its publications
    assert 'name="publications-TOTAL_FORMS"' in page.content.decode()
    listed = staff_client.get(reverse("admin:fleet_platformimageversion_changelist")).content.decode()
    assert "eastus, westus" in listed


def test_a_platform_image_version_named_latest_is_refused_on_the_form(staff_client, eastus):
    image = {"publisher": "P", "offer": "O", "sku": "S", "version": "latest", "publish_in": [eastus.pk]}
    page = staff_client.post(reverse("admin:fleet_platformimageversion_add"), image | EMPTY_PUBLISHED_AT)
    assert page.status_code == 200
    assert "never published" in page.content.decode()
    assert not PlatformImageVersion.objects.exists()


# --- who may ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["fleet_extensionversion_add", "fleet_galleryimageversion_add", "upgrades_rollout_changelist"]
)
def test_a_user_who_is_not_staff_is_sent_to_the_admin_login(name, gallery_image, eastus):
    client = Client()
    client.force_login(factories.user("olga", "operators"))
    url = reverse(f"admin:{name}")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    posted = client.post(url, {"publisher": "P", "type": "T", "version": "1.0"} | EMPTY_PUBLISHED_AT)
    assert posted.status_code == 302
    assert not ExtensionVersion.objects.exists()


def test_staff_without_fleet_permissions_cannot_publish(bare_staff_client):
    response = bare_staff_client.post(
        reverse("admin:fleet_extensionversion_add"), {"publisher": "P", "type": "T", "version": "1.0"}
    )
    assert response.status_code == 403
    assert not ExtensionVersion.objects.exists()


# --- rollouts and runs: read-only for staff ---------------------------------------------------------


def test_staff_see_rollouts_and_their_steps_but_cannot_change_them(bare_staff_client, frozen_clock):
    factories.outdated_scale_set(capacity=4, enable_automatic_os_upgrade=True)
    (rollout_id,) = rollouts.automatic_upgrades_scan()
    listed = bare_staff_client.get(reverse("admin:upgrades_rollout_changelist"))
    assert listed.status_code == 200
    assert factories.NEW_KEY in listed.content.decode()
    change = reverse("admin:upgrades_rollout_change", args=[rollout_id])
    page = bare_staff_client.get(change)
    assert page.status_code == 200
    html = page.content.decode()
    assert "eastus" in html  # its step
    assert 'name="_save"' not in html
    assert bare_staff_client.post(change, {"status": "Completed"}).status_code == 403
    assert bare_staff_client.get(reverse("admin:upgrades_rollout_add")).status_code == 403
    assert bare_staff_client.post(reverse("admin:upgrades_rollout_delete", args=[rollout_id])).status_code == 403
    assert Rollout.objects.get().status == "Waiting"


def test_staff_see_runs_read_only(bare_staff_client):
    from upgrades.services import os_upgrade_now

    run = os_upgrade_now(scale_set=factories.outdated_scale_set(capacity=4))
    listed = bare_staff_client.get(reverse("admin:upgrades_upgraderun_changelist"))
    assert listed.status_code == 200
    assert reverse("admin:upgrades_upgraderun_change", args=[run.pk]) in listed.content.decode()
    assert bare_staff_client.get(reverse("admin:upgrades_upgraderun_change", args=[run.pk])).status_code == 200
    assert bare_staff_client.get(reverse("admin:upgrades_upgraderun_add")).status_code == 403
    assert bare_staff_client.post(reverse("admin:upgrades_upgraderun_delete", args=[run.pk])).status_code == 403
    assert UpgradeRun.objects.filter(pk=run.pk).exists()
