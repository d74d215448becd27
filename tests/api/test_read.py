"""Read endpoints: ARM shapes field by field, paging, 404s and pinned query counts (SPEC 7)."""

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from fleet.models import HealthState, Instance, PowerState, ProvisioningState, ScaleSet
from tests import factories
from tests.api.conftest import API_VERSION, ApiClient

pytestmark = pytest.mark.django_db

SUB = factories.SUBSCRIPTION
SETS = f"/subscriptions/{SUB}/resourceGroups/rg-test/providers/Microsoft.Compute/virtualMachineScaleSets"


def _web(capacity: int = 5, **model: Any) -> ScaleSet:
    return factories.scale_set(
        "web",
        capacity,
        zones=["1", "2"],
        extensions=[factories.APP_HEALTH_HTTP],
        upgrade_mode="Rolling",
        max_batch_instance_percent=25,
        pause_time_between_batches="PT30S",
        **model,
    )


def _follow(api: ApiClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following nextLink to the end; returns the pages' bodies."""
    pages = [api.get(path, **params).json()]
    while "nextLink" in pages[-1]:
        link = urlsplit(pages[-1]["nextLink"])
        assert link.scheme == "http"
        assert link.netloc == "testserver"
        query = {key: values[0] for key, values in parse_qs(link.query).items()}
        assert query["api-version"] == API_VERSION
        pages.append(api.get(link.path, api_version=None, **query).json())
        assert len(pages) < 50
    return pages


# --- subscriptions and scale sets ----------------------------------------------------------------


def test_subscriptions_lists_distinct_subscriptions_of_scale_sets(viewer_api: ApiClient) -> None:
    _web()
    factories.scale_set("api", 1)
    assert viewer_api.get("/subscriptions").json() == {
        "value": [{"id": f"/subscriptions/{SUB}", "subscriptionId": SUB, "displayName": SUB, "state": "Enabled"}]
    }


def test_scale_set_get_has_the_arm_shape(viewer_api: ApiClient) -> None:
    made = _web()
    body = viewer_api.get(f"{SETS}/web").json()
    assert body["id"] == made.resource_id
    assert body["name"] == "web"
    assert body["type"] == "Microsoft.Compute/virtualMachineScaleSets"
    assert body["location"] == "eastus"
    assert body["zones"] == ["1", "2"]
    assert body["sku"] == {"name": "Standard_D2s_v3", "tier": "Standard", "capacity": 5}
    props = body["properties"]
    assert props["upgradePolicy"] == {
        "mode": "Rolling",
        "rollingUpgradePolicy": {
            "maxBatchInstancePercent": 25,
            "maxUnhealthyInstancePercent": 20,
            "maxUnhealthyUpgradedInstancePercent": 20,
            "pauseTimeBetweenBatches": "PT30S",
            "enableCrossZoneUpgrade": False,
            "prioritizeUnhealthyInstances": False,
            "rollbackFailedInstancesOnPolicyBreach": False,
            "maxSurge": False,
        },
        "automaticOSUpgradePolicy": {
            "enableAutomaticOSUpgrade": False,
            "disableAutomaticRollback": False,
            "useRollingUpgradePolicy": False,
            "osRollingUpgradeDeferral": False,
        },
    }
    profile = props["virtualMachineProfile"]
    assert profile["storageProfile"]["imageReference"] == {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": "latest",
    }
    assert "osProfile" not in profile  # Linux: no windowsConfiguration
    assert "networkProfile" not in profile  # no load-balancer probe
    assert profile["extensionProfile"]["extensions"] == [
        {
            "name": "HealthExtension",
            "properties": {
                "publisher": "Microsoft.ManagedServices",
                "type": "ApplicationHealthLinux",
                "typeHandlerVersion": "2.0",
                "autoUpgradeMinorVersion": True,
                "enableAutomaticUpgrade": False,
                "provisionAfterExtensions": [],
                "settings": factories.APP_HEALTH_HTTP["settings"],
                "provisioningState": "Succeeded",
            },
        }
    ]
    assert props["provisioningState"] == "Succeeded"
    assert props["singlePlacementGroup"] is True
    assert props["platformFaultDomainCount"] == 5
    assert len(props["uniqueId"]) == 36


def test_windows_set_with_a_probe_shows_os_profile_and_health_probe(viewer_api: ApiClient) -> None:
    windows: dict[str, str] = {
        "image_publisher": "MicrosoftWindowsServer",
        "image_offer": "WindowsServer",
        "image_sku": "2019-Datacenter",
    }
    factories.publish("17763.1.1", factories.region(), at=None, **windows)
    factories.scale_set(
        "win",
        2,
        image_publisher=windows["image_publisher"],
        image_offer=windows["image_offer"],
        image_sku=windows["image_sku"],
        image_version="latest",
        os_type="Windows",
        enable_automatic_updates=False,
        health_probe_protocol="http",
        health_probe_port=80,
        health_probe_path="/health",
    )
    profile = viewer_api.get(f"{SETS}/win").json()["properties"]["virtualMachineProfile"]
    assert profile["osProfile"] == {"windowsConfiguration": {"enableAutomaticUpdates": False}}
    assert profile["networkProfile"]["healthProbe"]["id"].endswith("/loadBalancers/win-lb/probes/http-80")


def test_protected_settings_are_never_returned(viewer_api: ApiClient) -> None:
    import datetime as dt

    factories.scale_set("kv", 1, extensions=[factories.key_vault(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))])
    text = viewer_api.get(f"{SETS}/kv").content.decode()
    assert "s3cret" not in text
    assert "protectedSettings" not in text


def test_unknown_scale_set_is_an_arm_404_naming_it(viewer_api: ApiClient) -> None:
    response = viewer_api.get(f"{SETS}/ghost")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "code": "ResourceNotFound",
        "message": "The Resource 'Microsoft.Compute/virtualMachineScaleSets/ghost' under resource group "
        "'rg-test' was not found.",
    }


@pytest.mark.parametrize("instance_id", ["99", "abc", "-1"])
def test_unknown_vm_is_an_arm_404(viewer_api: ApiClient, instance_id: str) -> None:
    _web()
    for suffix in ("", "/instanceView"):
        response = viewer_api.get(f"{SETS}/web/virtualMachines/{instance_id}{suffix}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ResourceNotFound"
        assert f"virtualMachines/{instance_id}'" in response.json()["error"]["message"]


def test_scale_set_lists_in_group_and_subscription_page_through_every_set(viewer_api: ApiClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.API_PAGE_SIZE = 2
    for n in range(5):
        factories.scale_set(f"set{n}", 1)
    for path in (SETS, f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets"):
        pages = _follow(viewer_api, path)
        assert [len(p["value"]) for p in pages] == [2, 2, 1]
        assert sorted(s["name"] for p in pages for s in p["value"]) == [f"set{n}" for n in range(5)]
    assert viewer_api.get(SETS.replace("rg-test", "rg-other")).json() == {"value": []}


def test_bad_skiptoken_is_400_not_500(viewer_api: ApiClient) -> None:
    _web()
    response = viewer_api.get(f"{SETS}/web/virtualMachines", **{"$skiptoken": "DROP TABLE"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "InvalidParameter"
    assert response.json()["error"]["target"] == "$skiptoken"


# --- virtual machines --------------------------------------------------------------------------------


def test_vm_list_pages_through_every_vm_exactly_once(viewer_api: ApiClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.API_PAGE_SIZE = 4
    _web(capacity=12)
    pages = _follow(viewer_api, f"{SETS}/web/virtualMachines")
    assert [len(p["value"]) for p in pages] == [4, 4, 4]
    assert [vm["instanceId"] for p in pages for vm in p["value"]] == [str(n) for n in range(12)]


def test_vm_has_the_arm_shape(viewer_api: ApiClient) -> None:
    made = _web()
    instance = Instance.objects.get(scale_set=made, instance_id=1)
    body = viewer_api.get(f"{SETS}/web/virtualMachines/1").json()
    assert body["id"] == f"{made.resource_id}/virtualMachines/1"
    assert body["name"] == "web_1"
    assert body["type"] == "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"
    assert body["location"] == "eastus"
    assert body["instanceId"] == "1"
    assert body["zones"] == [instance.zone]
    assert body["sku"] == {"name": "Standard_D2s_v3", "tier": "Standard"}
    props = body["properties"]
    assert props["latestModelApplied"] is True
    assert props["provisioningState"] == "Succeeded"
    assert props["hardwareProfile"] == {"vmSize": "Standard_D2s_v3"}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": "latest",
        "exactVersion": factories.OLD_VERSION,
    }
    assert props["storageProfile"]["osDisk"]["name"] == instance.os_disk
    assert [d["lun"] for d in props["storageProfile"]["dataDisks"]] == [0]
    assert props["protectionPolicy"] == {"protectFromScaleSetActions": False}
    assert "instanceView" not in props


def test_latest_model_applied_follows_the_model_version(viewer_api: ApiClient) -> None:
    made = _web()
    ScaleSet.objects.filter(pk=made.pk).update(model_version=2)
    Instance.objects.filter(scale_set=made, instance_id=0).update(model_version=2)
    applied = {
        vm["instanceId"]: vm["properties"]["latestModelApplied"]
        for vm in viewer_api.get(f"{SETS}/web/virtualMachines").json()["value"]
    }
    assert applied == {"0": True, "1": False, "2": False, "3": False, "4": False}


def test_vm_instance_view_has_the_arm_shape(viewer_api: ApiClient) -> None:
    made = _web()
    Instance.objects.filter(scale_set=made, instance_id=2).update(
        provisioning_state=ProvisioningState.FAILED,
        power_state=PowerState.STOPPED,
        health_state=HealthState.UNHEALTHY,
        last_error="Boot failed.",
        extension_states={"HealthExtension": {"version": "2.0", "state": "Failed"}},
    )
    instance = Instance.objects.get(scale_set=made, instance_id=2)
    view = viewer_api.get(f"{SETS}/web/virtualMachines/2/instanceView").json()
    assert view["platformUpdateDomain"] == instance.update_domain
    assert view["platformFaultDomain"] == instance.fault_domain
    assert view["statuses"] == [
        {
            "code": "ProvisioningState/failed",
            "level": "Error",
            "displayStatus": "Provisioning failed",
            "message": "Boot failed.",
        },
        {"code": "PowerState/stopped", "level": "Info", "displayStatus": "VM stopped"},
    ]
    assert view["vmHealth"] == {
        "status": {"code": "HealthState/unhealthy", "level": "Warning", "displayStatus": "The VM is unhealthy"}
    }
    assert view["extensions"] == [
        {
            "name": "HealthExtension",
            "type": "Microsoft.ManagedServices.ApplicationHealthLinux",
            "typeHandlerVersion": "2.0",
            "statuses": [
                {"code": "ProvisioningState/failed", "level": "Error", "displayStatus": "Provisioning failed"}
            ],
        }
    ]
    expanded = viewer_api.get(f"{SETS}/web/virtualMachines/2", **{"$expand": "instanceView"}).json()
    assert expanded["properties"]["instanceView"] == view


def test_healthy_vm_reports_healthstate_healthy_and_running(viewer_api: ApiClient) -> None:
    _web()
    view = viewer_api.get(f"{SETS}/web/virtualMachines/0/instanceView").json()
    assert view["statuses"][0]["code"] == "ProvisioningState/succeeded"
    assert view["statuses"][1] == {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}
    assert view["vmHealth"]["status"]["code"] == "HealthState/healthy"


def test_vm_without_a_health_source_has_no_vm_health(viewer_api: ApiClient) -> None:
    factories.scale_set("plain", 1)
    assert "vmHealth" not in viewer_api.get(f"{SETS}/plain/virtualMachines/0/instanceView").json()


def test_scale_set_instance_view_summarises_statuses(viewer_api: ApiClient) -> None:
    made = _web(capacity=4)
    Instance.objects.filter(scale_set=made, instance_id=3).update(power_state=PowerState.DEALLOCATED)
    view = viewer_api.get(f"{SETS}/web/instanceView").json()
    assert view["virtualMachine"]["statusesSummary"] == [
        {"code": "PowerState/deallocated", "count": 1},
        {"code": "PowerState/running", "count": 3},
        {"code": "ProvisioningState/succeeded", "count": 4},
    ]
    assert view["extensions"][0]["name"] == "HealthExtension"
    assert sum(s["count"] for s in view["extensions"][0]["statusesSummary"]) == 4
    assert view["statuses"][0]["code"] == "ProvisioningState/succeeded"


# --- query counts: fixed, whatever the number of instances ----------------------------------------------

# per request: token lookup 1, the user's groups 1, then the endpoint's own reads
QUERY_COUNTS = {
    "/subscriptions": 3,
    f"{SETS}": 4,
    f"{SETS}/web": 4,
    f"{SETS}/web/instanceView": 5,
    f"{SETS}/web/virtualMachines": 5,
    f"{SETS}/web/virtualMachines/1": 5,
    f"{SETS}/web/virtualMachines/1/instanceView": 6,
}


@pytest.mark.parametrize("capacity", [3, 40])
@pytest.mark.parametrize("path", list(QUERY_COUNTS))
def test_query_count_is_pinned_and_independent_of_instances(
    viewer_api: ApiClient, django_assert_num_queries, path: str, capacity: int
) -> None:  # type: ignore[no-untyped-def]
    _web(capacity=capacity)
    factories.scale_set("other", 2)
    viewer_api.get("/subscriptions")  # the token's first use writes last_used_at once
    with django_assert_num_queries(QUERY_COUNTS[path]):
        response = viewer_api.get(path)
    assert response.status_code == 200


@pytest.mark.parametrize("capacity", [3, 40])
def test_vm_list_with_instance_views_has_a_fixed_query_count(
    viewer_api: ApiClient, django_assert_num_queries, capacity: int
) -> None:  # type: ignore[no-untyped-def]
    _web(capacity=capacity)
    viewer_api.get("/subscriptions")
    with django_assert_num_queries(6):  # the list's five, and the extensions once
        response = viewer_api.get(f"{SETS}/web/virtualMachines", **{"$expand": "instanceView"})
    assert response.status_code == 200
    views = [vm["properties"]["instanceView"] for vm in response.json()["value"]]
    assert len(views) == capacity
    assert all(view["statuses"][0]["code"].startswith("ProvisioningState/") for view in views)
