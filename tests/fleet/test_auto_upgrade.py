"""R-AUTO-1: automatic OS image upgrades are enabled only on a set that can take them; each
broken condition is its own clear message naming what to change. R-AUTO-5: disabling always works.

The rule itself is pure (automatic_os_upgrade_problems); the services enforce it when a set is
created with it on (scale_set_create) and when an operator turns it on (automatic_os_upgrade_set).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from fleet import services
from fleet.auto_upgrade import CUSTOM_IMAGE_REFUSED, automatic_os_upgrade_problems
from fleet.demo import demo_fleet_load
from fleet.models import Gallery, GalleryImage, Instance, ScaleSet, ScaleSetExtension, SupportedOsSku
from tests import factories
from upgrades.services import automatic_os_upgrade_set

WINDOWS = {"image_publisher": "MicrosoftWindowsServer", "image_offer": "WindowsServer", "image_sku": "2019-Datacenter"}
PROBE = {"health_probe_protocol": "tcp", "health_probe_port": 80}


def sf_extension(version: str = "1.1", level: str | None = "Silver", type_: str = "ServiceFabricNode") -> dict:
    settings: dict[str, Any] = {"nodeTypeRef": "frontend"}
    if level is not None:
        settings["durabilityLevel"] = level
    return {
        "name": "ServiceFabricNode",
        "publisher": "Microsoft.Azure.ServiceFabric",
        "type": type_,
        "type_handler_version": version,
        "settings": settings,
    }


def problems(extensions: list[dict] | None = None, *, supported: bool = True, **fields: Any) -> list[str]:
    """The problems of an unsaved Linux set on Ubuntu 'latest' with a probe, changed by `fields`."""
    scale_set = ScaleSet(name="s", **{**factories.UBUNTU, "image_version": "latest", **PROBE, **fields})
    rows = [ScaleSetExtension(**spec) for spec in extensions or []]
    return automatic_os_upgrade_problems(scale_set, rows, supported=supported)


def service_fabric(**fields: Any) -> dict[str, Any]:
    """A Windows Service Fabric node type (no health source of its own), Silver unless told."""
    return {
        **WINDOWS,
        "os_type": "Windows",
        "enable_automatic_updates": False,
        "health_probe_protocol": "",
        "service_fabric_durability": "Silver",
        **fields,
    }


def refusal(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return error.value.message_dict["enable_automatic_os_upgrade"]


# --- the rule (pure) ---------------------------------------------------------------------------


def test_r_auto_1_a_set_that_meets_every_condition_has_no_problem():
    assert problems() == []
    assert problems([factories.APP_HEALTH_HTTP], health_probe_protocol="") == []


def test_r_auto_1_a_pinned_image_version_is_refused():
    assert problems(image_version=factories.OLD_VERSION) == [
        f"Automatic OS upgrades need image version 'latest', not a pinned version ({factories.OLD_VERSION}): "
        "set the image version to latest."
    ]


def test_r_auto_1_a_platform_image_that_is_not_a_supported_sku_is_refused():
    assert problems(supported=False, image_sku="20.04-LTS") == [
        "Image Canonical/UbuntuServer/20.04-LTS is not a supported SKU for automatic OS upgrades: "
        "use a supported SKU (see the supported OS SKUs list) or a Compute Gallery image."
    ]


def test_r_auto_1_a_gallery_image_needs_no_supported_sku():
    assert problems(supported=False, image_source="gallery", image_publisher="", image_offer="", image_sku="") == []


def test_r_auto_1_a_custom_image_uri_is_refused():
    found = problems(image_source="custom", custom_image_uri="https://x.blob.core.windows.net/v/a.vhd")
    assert found == [CUSTOM_IMAGE_REFUSED]
    assert CUSTOM_IMAGE_REFUSED == (
        "Automatic OS upgrades do not support custom image URIs; use a platform image or a Compute Gallery image."
    )


def test_r_auto_1_a_set_without_a_health_source_is_refused():
    assert problems(health_probe_protocol="") == [
        "Automatic OS upgrades need a health source: add a load-balancer health probe "
        "or the Application Health extension."
    ]


def test_r_auto_1_a_service_fabric_set_needs_no_health_source():
    assert problems([sf_extension()], **service_fabric()) == []


@pytest.mark.parametrize("updates", [True, None])
def test_r_auto_1_windows_automatic_updates_must_be_off(updates):
    windows = {**WINDOWS, "os_type": "Windows"}
    assert problems(**windows, enable_automatic_updates=False) == []
    assert problems(**windows, enable_automatic_updates=updates) == [
        "Windows automatic updates must be off with automatic OS upgrades: set enableAutomaticUpdates to false."
    ]


@pytest.mark.parametrize("durability", ["Silver", "Gold"])
def test_r_auto_1_service_fabric_silver_and_gold_are_accepted(durability):
    assert problems([sf_extension(level=durability)], **service_fabric(service_fabric_durability=durability)) == []


def test_r_auto_1_service_fabric_bronze_is_accepted_on_a_stateless_node_type():
    extensions = [sf_extension(level="Bronze", type_="ServiceFabricLinuxNode")]
    fields = service_fabric(service_fabric_durability="Bronze", service_fabric_stateless=True)
    assert problems(extensions, **fields) == []


def test_r_auto_1_service_fabric_bronze_is_refused_on_a_stateful_node_type():
    fields = service_fabric(service_fabric_durability="Bronze", service_fabric_stateless=False)
    assert problems([sf_extension(level="Bronze")], **fields) == [
        "Service Fabric durability Bronze allows automatic OS upgrades only on a stateless node type: "
        "raise the durability to Silver or Gold, or use a stateless node type."
    ]


@pytest.mark.parametrize("version", ["1.0", "0.9", "1.0.999"])
def test_r_auto_1_a_service_fabric_extension_older_than_1_1_is_refused(version):
    assert problems([sf_extension(version)], **service_fabric()) == [
        f"Service Fabric extension ServiceFabricNode has typeHandlerVersion {version}: raise it to 1.1 or later."
    ]


@pytest.mark.parametrize("version", ["1.1", "1.10", "1.01", "1.1.0", "1.2", "2.0"])
def test_r_auto_1_service_fabric_extension_versions_compare_numerically(version):
    # Part by part as numbers: 1.10 and 1.01 are >= 1.1 (as text "1.01" < "1.1"; as a float 1.01 < 1.1).
    assert problems([sf_extension(version)], **service_fabric()) == []


@pytest.mark.parametrize("level", ["Gold", "Bronze", None])
def test_r_auto_1_cluster_and_extension_durability_must_be_equal(level):
    assert problems([sf_extension(level=level)], **service_fabric(service_fabric_durability="Silver")) == [
        "Service Fabric durability differs between the cluster (Silver) and extension ServiceFabricNode "
        f"(durabilityLevel {level or 'not set'}): make them equal."
    ]


def test_r_auto_1_a_service_fabric_set_without_its_extension_is_refused():
    assert problems([], **service_fabric()) == [
        "Service Fabric: the set has no Service Fabric extension (ServiceFabricNode or ServiceFabricLinuxNode): "
        "add it with typeHandlerVersion 1.1 or later."
    ]


def test_r_auto_1_every_broken_condition_is_reported_at_once():
    found = problems(
        supported=False,
        image_version=factories.OLD_VERSION,
        health_probe_protocol="",
        os_type="Windows",
        enable_automatic_updates=True,
    )
    assert len(found) == 4
    assert [m.split()[0] for m in found] == ["Automatic", "Image", "Automatic", "Windows"]


# --- enforced when a set is created ------------------------------------------------------------


def test_r_auto_1_creating_a_set_with_it_on_checks_the_rule_and_writes_nothing_when_refused(db):
    with pytest.raises(ValidationError) as error:
        factories.scale_set(capacity=3, enable_automatic_os_upgrade=True)  # no health source
    assert refusal(error) == [
        "Automatic OS upgrades need a health source: add a load-balancer health probe "
        "or the Application Health extension."
    ]
    assert not ScaleSet.objects.exists()
    assert not Instance.objects.exists()
    created = factories.scale_set(capacity=3, enable_automatic_os_upgrade=True, extensions=[factories.APP_HEALTH_HTTP])
    assert created.enable_automatic_os_upgrade
    assert created.instances.count() == 3


def test_r_auto_1_the_supported_sku_table_decides(db):
    focal = {**factories.UBUNTU, "image_sku": "20.04-LTS"}
    factories.publish("20.04.202401010", **focal)
    model = {**focal, "image_version": "latest", **PROBE, "enable_automatic_os_upgrade": True}
    with pytest.raises(ValidationError) as error:
        factories.scale_set("focal", 2, image_source="platform", **model)
    assert "is not a supported SKU" in refusal(error)[0]
    SupportedOsSku.objects.create(publisher="Canonical", offer="UbuntuServer", sku="20.04-LTS")
    assert factories.scale_set("focal", 2, image_source="platform", **model).enable_automatic_os_upgrade
    # And a seeded SKU taken out of the table is no longer accepted.
    SupportedOsSku.objects.filter(**{"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS"}).delete()
    with pytest.raises(ValidationError):
        factories.scale_set("bionic", 2, **PROBE, enable_automatic_os_upgrade=True)


def test_r_auto_1_a_compute_gallery_image_is_accepted(db):
    eastus = factories.region()
    gallery = Gallery.objects.create(subscription_id="s", resource_group="rg", name="g", region=eastus)
    image = GalleryImage.objects.create(gallery=gallery, name="app", os_type="Linux")
    services.gallery_image_version_publish(image=image, name="1.0.0", target_regions=[eastus])
    created = factories.scale_set(
        "app", 2, image_source="gallery", gallery_image=image, image_version="latest", **PROBE
    )
    assert automatic_os_upgrade_set(scale_set=created, enabled=True).enable_automatic_os_upgrade


def test_r_auto_1_a_custom_image_set_cannot_be_created_with_it_on(db):
    with pytest.raises(ValidationError) as error:
        factories.scale_set(
            "legacy",
            2,
            image_source="custom",
            custom_image_uri="https://x.blob.core.windows.net/v/a.vhd",
            **PROBE,
            enable_automatic_os_upgrade=True,
        )
    assert refusal(error) == [CUSTOM_IMAGE_REFUSED]
    assert not ScaleSet.objects.exists()


# --- turning it on and off (automatic_os_upgrade_set) ------------------------------------------


def test_r_auto_1_turning_it_on_saves_the_flags_without_a_new_model_version(db):
    scale_set = factories.scale_set(capacity=2, **PROBE)
    saved = automatic_os_upgrade_set(scale_set=scale_set, enabled=True, disable_automatic_rollback=True)
    assert (saved.enable_automatic_os_upgrade, saved.disable_automatic_rollback) == (True, True)
    assert scale_set.enable_automatic_os_upgrade  # the caller's object follows
    scale_set.refresh_from_db()
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (True, True)
    assert scale_set.model_version == 1  # upgrade policy, not the VM model


def test_r_auto_1_turning_it_on_when_refused_writes_nothing(db):
    scale_set = factories.scale_set(capacity=2, image_version=factories.OLD_VERSION)  # pinned, no health
    with pytest.raises(ValidationError) as error:
        automatic_os_upgrade_set(scale_set=scale_set, enabled=True, disable_automatic_rollback=True)
    assert len(refusal(error)) == 2
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (False, False)
    scale_set.refresh_from_db()
    assert (scale_set.enable_automatic_os_upgrade, scale_set.disable_automatic_rollback) == (False, False)
    assert scale_set.model_version == 1


def test_r_auto_5_turning_it_off_always_works_even_on_a_set_that_breaks_the_rule(db):
    scale_set = factories.scale_set(capacity=2, **PROBE, enable_automatic_os_upgrade=True)
    ScaleSet.objects.filter(pk=scale_set.pk).update(health_probe_protocol="", image_version=factories.OLD_VERSION)
    saved = automatic_os_upgrade_set(scale_set=scale_set, enabled=False)
    assert not saved.enable_automatic_os_upgrade
    scale_set.refresh_from_db()
    assert not scale_set.enable_automatic_os_upgrade
    assert not scale_set.disable_automatic_rollback  # left as it was when not given


def test_r_auto_1_the_demo_fleet_satisfies_it(db):
    demo_fleet_load()
    on = set(ScaleSet.objects.filter(enable_automatic_os_upgrade=True).values_list("name", flat=True))
    assert on == {"web-eastus", "iis-westeurope"}


@pytest.mark.django_db
def test_r_auto_1_a_model_change_cannot_pin_a_version_while_automatic_upgrades_are_on():
    from upgrades.services import update_model

    scale_set = factories.scale_set(
        capacity=2, enable_automatic_os_upgrade=True, extensions=[factories.APP_HEALTH_HTTP]
    )
    with pytest.raises(ValidationError) as caught:
        update_model(scale_set=scale_set, changes={"image_version": factories.OLD_VERSION})
    assert "enable_automatic_os_upgrade" in caught.value.message_dict
    scale_set.refresh_from_db()
    assert (scale_set.image_version, scale_set.model_version) == ("latest", 1)
