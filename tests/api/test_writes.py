"""PUT, PATCH and DELETE of scale sets and their extensions (SPEC 7, R-MODE-1): all or nothing,
bad input named by its path, and a model change acted on by the upgrade mode."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fleet.models import Instance, ScaleSet, ScaleSetExtension
from tests import factories
from tests.api.conftest import ApiClient
from upgrades.models import Kind, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db

GROUP = f"/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test"
SETS = f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets"


def new_set_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location": "eastus",
        "sku": {"name": "Standard_D2s_v3", "capacity": 4},
        "zones": ["1", "2"],
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {"maxBatchInstancePercent": 50, "pauseTimeBetweenBatches": "PT5S"},
            },
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": {
                        "publisher": "Canonical",
                        "offer": "UbuntuServer",
                        "sku": "18.04-LTS",
                        "version": "latest",
                    }
                },
                "extensionProfile": {
                    "extensions": [
                        {
                            "name": "HealthExtension",
                            "properties": {
                                "publisher": "Microsoft.ManagedServices",
                                "type": "ApplicationHealthLinux",
                                "typeHandlerVersion": "2.0",
                                "settings": {"protocol": "tcp", "port": 8080},
                            },
                        }
                    ]
                },
            },
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def published(db: None) -> None:
    factories.publish(factories.OLD_VERSION, factories.region("eastus"))


def test_put_creates_a_scale_set_201_and_get_reads_it_back(operator_api: ApiClient, published) -> None:
    response = operator_api.put(f"{SETS}/api-made", new_set_body())
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "api-made"
    assert body["sku"]["capacity"] == 4
    assert body["zones"] == ["1", "2"]
    assert body["properties"]["upgradePolicy"]["rollingUpgradePolicy"]["maxBatchInstancePercent"] == 50
    scale_set = ScaleSet.objects.get(name="api-made")
    assert scale_set.instances.count() == 4
    assert [e.name for e in scale_set.extensions.all()] == ["HealthExtension"]
    assert operator_api.get(f"{SETS}/api-made").json() == body


def test_put_of_what_get_read_changes_nothing(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3, upgrade_mode="Rolling", extensions=[factories.APP_HEALTH_HTTP])
    before = operator_api.get(f"{SETS}/web").json()
    response = operator_api.put(f"{SETS}/web", before)
    assert response.status_code == 200, response.content
    assert response.json() == before
    assert ScaleSet.objects.get().model_version == 1
    assert not UpgradeRun.objects.exists()


def test_a_new_image_in_rolling_mode_starts_a_rolling_model_upgrade_r_mode_1(operator_api: ApiClient, drive) -> None:
    factories.scale_set("web", 4, upgrade_mode="Rolling", extensions=[factories.APP_HEALTH_HTTP])
    factories.publish(factories.NEW_VERSION)
    body = operator_api.get(f"{SETS}/web").json()
    reference = body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    reference["version"] = factories.NEW_VERSION

    response = operator_api.put(f"{SETS}/web", body)

    assert response.status_code == 200, response.content
    assert ScaleSet.objects.get().model_version == 2
    run = drive(UpgradeRun.objects.get())
    assert run.kind == Kind.ROLLING_MODEL
    assert run.status == RunStatus.COMPLETED
    assert set(Instance.objects.values_list("os_image", flat=True)) == {factories.NEW_KEY}
    vms = operator_api.get(f"{SETS}/web/virtualMachines").json()["value"]
    assert all(vm["properties"]["latestModelApplied"] for vm in vms)


def test_patch_changes_only_what_it_names(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    response = operator_api.patch(
        f"{SETS}/web",
        {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxUnhealthyInstancePercent": 40}}}},
    )
    assert response.status_code == 200, response.content
    scale_set = ScaleSet.objects.get()
    assert scale_set.max_unhealthy_instance_percent == 40
    assert scale_set.max_batch_instance_percent == 20
    assert scale_set.model_version == 1


def test_patch_capacity_scales_out_and_in(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    assert operator_api.patch(f"{SETS}/web", {"sku": {"capacity": 5}}).status_code == 200
    assert sorted(Instance.objects.values_list("instance_id", flat=True)) == [0, 1, 2, 3, 4]
    assert all(i.data_disks.count() == 1 for i in Instance.objects.all())
    assert operator_api.patch(f"{SETS}/web", {"sku": {"capacity": 2}}).status_code == 200
    assert sorted(Instance.objects.values_list("instance_id", flat=True)) == [0, 1]
    assert ScaleSet.objects.get().capacity == 2


def test_scale_in_while_a_run_rolls_forward_is_409_and_changes_nothing(operator_api: ApiClient) -> None:
    factories.outdated_scale_set(6)
    operator_api.post(f"{SETS}/web/osRollingUpgrade")
    response = operator_api.patch(
        f"{SETS}/web",
        {"sku": {"capacity": 2}, "properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxSurge": True}}}},
    )
    assert response.status_code == 409
    assert Instance.objects.count() == 6
    assert ScaleSet.objects.get().max_surge is False  # the settings in the same body were not applied either


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"properties": {"upgradePolicy": {"mode": "Sometimes"}}}, "properties.upgradePolicy.mode"),
        (
            {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxBatchInstancePercent": "fifty"}}}},
            "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent",
        ),
        (
            {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"maxBatchInstancePercent": 101}}}},
            "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent",
        ),
        (
            {"properties": {"upgradePolicy": {"rollingUpgradePolicy": {"pauseTimeBetweenBatches": "soon"}}}},
            "properties.upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches",
        ),
        ({"properties": {"upgradePolicy": "Rolling"}}, "properties.upgradePolicy"),
        ({"sku": {"capacity": -1}}, "sku.capacity"),
        ({"sku": {"capacity": 10**12}}, "sku.capacity"),
        ({"sku": {"capacity": 500}}, "sku.capacity"),
        ({"zones": "1"}, "zones"),
        ({"location": "westeurope"}, "location"),
        ({"properties": {"platformFaultDomainCount": 2}}, "properties.platformFaultDomainCount"),
        (
            {"properties": {"virtualMachineProfile": {"storageProfile": {"imageReference": {"publisher": "X"}}}}},
            "properties.virtualMachineProfile.storageProfile.imageReference.offer",
        ),
        (
            {
                "properties": {
                    "virtualMachineProfile": {
                        "extensionProfile": {"extensions": [{"name": "x", "properties": {"publisher": "p"}}]}
                    }
                }
            },
            "properties.virtualMachineProfile.extensionProfile.extensions[0].properties.type",
        ),
        (
            {"properties": {"virtualMachineProfile": {"networkProfile": {"healthProbe": {"id": "/lb/probes/x"}}}}},
            "properties.virtualMachineProfile.networkProfile.healthProbe.id",
        ),
    ],
)
def test_bad_input_is_400_naming_the_property_and_writes_nothing(
    operator_api: ApiClient, change: dict[str, Any], target: str
) -> None:
    factories.scale_set("web", 3)
    before = operator_api.get(f"{SETS}/web").json()
    response = operator_api.patch(f"{SETS}/web", change)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert target in (error.get("target"), *(d.get("target") for d in error.get("details", []))), error
    assert operator_api.get(f"{SETS}/web").json() == before


@pytest.mark.parametrize("body", [b"[]", b"null", b'"x"', b"{", b"1e400", b"[" * 50_000, b"\xff"])
def test_bodies_that_are_not_scale_sets_are_400(operator_api: ApiClient, published, body: bytes) -> None:
    response = operator_api.put(f"{SETS}/api-made", body)
    assert response.status_code == 400
    assert not ScaleSet.objects.exists()


def test_create_needs_a_location_and_an_image(operator_api: ApiClient, published) -> None:
    body = new_set_body()
    del body["location"]
    assert operator_api.put(f"{SETS}/x", body).json()["error"]["target"] == "location"
    body = new_set_body()
    del body["properties"]["virtualMachineProfile"]["storageProfile"]
    response = operator_api.put(f"{SETS}/x", body)
    assert response.json()["error"]["target"] == "properties.virtualMachineProfile.storageProfile.imageReference"
    response = operator_api.put(f"{SETS}/bad name!", new_set_body())
    assert response.status_code in (400, 404)
    assert not ScaleSet.objects.exists()


def test_enabling_automatic_os_upgrades_is_refused_with_every_reason_r_auto_1(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3, image_version=factories.OLD_VERSION)  # pinned, and no health source
    response = operator_api.patch(
        f"{SETS}/web",
        {"properties": {"upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True}}}},
    )
    assert response.status_code == 400
    targets = {d["target"] for d in response.json()["error"]["details"]}
    assert targets == {"properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade"}
    assert ScaleSet.objects.get().enable_automatic_os_upgrade is False


def test_delete_removes_the_set_and_is_204_when_gone(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    assert operator_api.delete(f"{SETS}/web").status_code == 200
    assert not ScaleSet.objects.exists()
    assert not Instance.objects.exists()
    assert operator_api.delete(f"{SETS}/web").status_code == 204
    assert operator_api.get(f"{SETS}/web").status_code == 404


def test_delete_while_a_run_rolls_forward_is_409(operator_api: ApiClient) -> None:
    factories.outdated_scale_set(4)
    operator_api.post(f"{SETS}/web/osRollingUpgrade")
    assert operator_api.delete(f"{SETS}/web").status_code == 409
    assert ScaleSet.objects.exists()


def test_viewers_cannot_write(viewer_api: ApiClient, published) -> None:
    factories.scale_set("web", 3)
    assert viewer_api.put(f"{SETS}/other", new_set_body()).status_code == 403
    assert viewer_api.patch(f"{SETS}/web", {"sku": {"capacity": 1}}).status_code == 403
    assert viewer_api.delete(f"{SETS}/web").status_code == 403
    assert ScaleSet.objects.get().capacity == 3


# --- extensions ------------------------------------------------------------------------------------

EXTENSIONS = f"{SETS}/web/extensions"


def test_extension_get_list_and_404(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    listed = viewer_api.get(EXTENSIONS).json()["value"]
    assert [e["name"] for e in listed] == ["HealthExtension"]
    one = viewer_api.get(f"{EXTENSIONS}/HealthExtension").json()
    assert one == listed[0]
    assert one["id"].endswith("/virtualMachineScaleSets/web/extensions/HealthExtension")
    assert one["type"] == "Microsoft.Compute/virtualMachineScaleSets/extensions"
    assert viewer_api.get(f"{EXTENSIONS}/ghost").status_code == 404


def test_enabling_automatic_extension_upgrade_is_a_setting_not_a_model_change(operator_api: ApiClient) -> None:
    factories.scale_set("web", 2, upgrade_mode="Rolling", extensions=[factories.APP_HEALTH_HTTP])
    body = operator_api.get(f"{EXTENSIONS}/HealthExtension").json()
    body["properties"]["enableAutomaticUpgrade"] = True

    response = operator_api.put(f"{EXTENSIONS}/HealthExtension", body)

    assert response.status_code == 200, response.content
    assert response.json()["properties"]["enableAutomaticUpgrade"] is True
    assert ScaleSetExtension.objects.get().enable_automatic_upgrade is True
    assert ScaleSet.objects.get().model_version == 1
    assert not UpgradeRun.objects.exists()


def test_a_new_extension_is_a_model_change_r_mode_1(operator_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    body = {
        "properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1"}
    }
    response = operator_api.put(f"{EXTENSIONS}/script", body)
    assert response.status_code == 201, response.content
    assert ScaleSet.objects.get().model_version == 2
    vms = operator_api.get(f"{SETS}/web/virtualMachines").json()["value"]
    assert not any(vm["properties"]["latestModelApplied"] for vm in vms)  # Manual mode: waits for an operator


def test_protected_settings_survive_a_round_trip(operator_api: ApiClient) -> None:
    secret = {**factories.APP_HEALTH_HTTP, "name": "script", "type": "CustomScript", "settings": {}}
    secret["publisher"] = "Microsoft.Azure.Extensions"
    secret["protected_settings"] = {"commandToExecute": "echo hi"}
    factories.scale_set("web", 2, extensions=[secret])
    body = operator_api.get(f"{EXTENSIONS}/script").json()
    assert "protectedSettings" not in body["properties"]
    changed = copy.deepcopy(body)
    changed["properties"]["enableAutomaticUpgrade"] = True
    assert operator_api.put(f"{EXTENSIONS}/script", changed).status_code == 200
    assert ScaleSetExtension.objects.get().protected_settings == {"commandToExecute": "echo hi"}


def test_a_second_health_source_is_refused_r_h_1(operator_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    body = {
        "properties": {
            "publisher": "Microsoft.ManagedServices",
            "type": "ApplicationHealthLinux",
            "typeHandlerVersion": "2.0",
            "settings": {"protocol": "tcp", "port": 22},
        }
    }
    response = operator_api.put(f"{EXTENSIONS}/SecondHealth", body)
    assert response.status_code == 400
    assert "Only one Application Health extension" in response.json()["error"]["message"]
    assert ScaleSetExtension.objects.count() == 1
    assert ScaleSet.objects.get().model_version == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        {"properties": "x"},
        {"properties": {"publisher": 1, "type": "t", "typeHandlerVersion": "1.0"}},
        {"properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "one"}},
        {"properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "1.0", "settings": []}},
        {"properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "1.0", "provisionAfterExtensions": "a"}},
        {"properties": {"publisher": "p", "type": "t", "typeHandlerVersion": "1.0", "provisionAfterExtensions": ["z"]}},
    ],
)
def test_bad_extensions_are_400_and_write_nothing(operator_api: ApiClient, body: Any) -> None:
    factories.scale_set("web", 2)
    response = operator_api.put(f"{EXTENSIONS}/script", body)
    assert response.status_code == 400, response.content
    assert not ScaleSetExtension.objects.exists()
    assert ScaleSet.objects.get().model_version == 1


def test_extension_delete(operator_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    assert operator_api.delete(f"{EXTENSIONS}/HealthExtension").status_code == 200
    assert not ScaleSetExtension.objects.exists()
    assert ScaleSet.objects.get().model_version == 2
    assert operator_api.delete(f"{EXTENSIONS}/HealthExtension").status_code == 204
