"""Contract: the official Azure SDK (azure-mgmt-compute) reads our API over loopback.

The SDK's bearer policy refuses plain http (enforce_https). Over loopback in a test only, a
subclass of the SDK's own ARM policy turns that check off and otherwise authenticates exactly
as against Azure: it asks the credential for a token and sends `Authorization: Bearer …`.
"""

import threading
from typing import Any

import azure.mgmt.compute as azure_compute
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline import PipelineRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from api.tokens import token_create
from tests import factories


class ConsoleTokenCredential:
    """A TokenCredential that hands out one console API token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes_asked: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes_asked.append(scopes)
        return AccessToken(self.token, 4_102_444_800)  # 2100-01-01: never refreshed in a test


class LoopbackBearerPolicy(ARMChallengeAuthenticationPolicy):
    """The SDK's ARM bearer policy, allowed over http (the test server has no TLS)."""

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context.options["enforce_https"] = False
        super().on_request(request)


@pytest.mark.django_db(transaction=True)
def test_sdk_reads_a_scale_set_and_pages_through_its_vms(live_server: Any, settings: Any) -> None:
    settings.API_PAGE_SIZE = 3
    factories.scale_set("web", 7, zones=["1", "2"], upgrade_mode="Rolling", max_batch_instance_percent=25)
    credential = ConsoleTokenCredential(token_create(user=factories.user("sdk", "viewers"), name="sdk")[1])
    client = azure_compute.ComputeManagementClient(
        credential,
        factories.SUBSCRIPTION,
        base_url=live_server.url,
        authentication_policy=LoopbackBearerPolicy(credential, "https://management.azure.com/.default"),
    )

    vmss = client.virtual_machine_scale_sets.get("rg-test", "web")
    assert vmss.name == "web"
    assert vmss.location == "eastus"
    assert vmss.sku.capacity == 7
    assert vmss.zones == ["1", "2"]
    assert vmss.upgrade_policy.mode == "Rolling"
    assert vmss.upgrade_policy.rolling_upgrade_policy.max_batch_instance_percent == 25
    assert vmss.virtual_machine_profile.storage_profile.image_reference.offer == "UbuntuServer"

    vms = list(client.virtual_machine_scale_set_vms.list("rg-test", "web"))  # 3 pages through nextLink
    assert [vm.instance_id for vm in vms] == [str(n) for n in range(7)]
    assert all(vm.latest_model_applied for vm in vms)

    view = client.virtual_machine_scale_set_vms.get_instance_view("rg-test", "web", "4")
    assert view.platform_update_domain is not None
    assert [s.code for s in view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]

    assert [s.name for s in client.virtual_machine_scale_sets.list("rg-test")] == ["web"]
    assert credential.scopes_asked  # the token really came from the credential

    with pytest.raises(ResourceNotFoundError) as raised:  # our ARM error, read by the SDK
        client.virtual_machine_scale_sets.get("rg-test", "ghost")
    assert raised.value.error is not None
    assert raised.value.error.code == "ResourceNotFound"


# --- writes and long-running operations --------------------------------------------------------


def sdk_client(live_server: Any, role: str) -> azure_compute.ComputeManagementClient:
    credential = ConsoleTokenCredential(token_create(user=factories.user(f"sdk-{role}", role), name="sdk")[1])
    return azure_compute.ComputeManagementClient(
        credential,
        factories.SUBSCRIPTION,
        base_url=live_server.url,
        authentication_policy=LoopbackBearerPolicy(credential, "https://management.azure.com/.default"),
    )


def unknown_fields(model: Any, data: Any, path: str = "") -> list[str]:
    """Properties of our JSON that the SDK model has no field for (it would keep them only as
    raw data, invisible to SDK users): each is a shape that does not match ARM's."""
    if isinstance(data, list) and isinstance(model, list):
        return [
            f for i, (m, d) in enumerate(zip(model, data, strict=False)) for f in unknown_fields(m, d, f"{path}[{i}]")
        ]
    if not isinstance(data, dict) or not hasattr(model, "_attr_to_rest_field"):
        return []
    fields = {field._rest_name: attr for attr, field in model._attr_to_rest_field.items()}
    found = []
    for key, value in data.items():
        if key not in fields:
            found.append(f"{path}.{key}" if path else key)
        else:
            found.extend(unknown_fields(getattr(model, fields[key]), value, f"{path}.{key}" if path else key))
    return found


class GatedARMPolling(ARMPolling):
    """The SDK's own ARM polling, held back until the test has moved the run on: the test
    server's database is then never used by two threads at once (no timing involved)."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__(timeout=0)
        self.gate = gate

    def run(self) -> None:
        assert self.gate.wait(30), "the test never released the poller"
        super().run()


def resume(begin: Any, *args: Any, drive_until_done: Any) -> Any:
    """Start a long-running operation through the SDK, bring it to its end in simulated time,
    then let the SDK's poller follow Azure-AsyncOperation and Location to the end."""
    gate = threading.Event()
    poller = begin(*args, polling=GatedARMPolling(gate))
    drive_until_done()
    gate.set()
    result = poller.result(timeout=30)
    assert poller.status() == "Succeeded"
    return result


@pytest.mark.django_db(transaction=True)
def test_sdk_creates_updates_upgrades_cancels_and_reads_history(live_server: Any, settings: Any, drive) -> None:
    from azure.mgmt.compute import models

    from fleet.models import Instance, ScaleSet, SupportedOsSku
    from upgrades.models import RunStatus, UpgradeRun

    settings.API_RETRY_AFTER_SECONDS = 0  # the poller then uses polling_interval
    SupportedOsSku.objects.get_or_create(publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS")
    factories.publish(factories.OLD_VERSION, factories.region("eastus"))
    client = sdk_client(live_server, "operators")
    sets = client.virtual_machine_scale_sets

    # create with the SDK's own models
    body = models.VirtualMachineScaleSet(
        location="eastus",
        sku=models.Sku(name="Standard_D2s_v3", capacity=6),
        properties=models.VirtualMachineScaleSetProperties(
            upgrade_policy=models.UpgradePolicy(
                mode="Rolling", rolling_upgrade_policy=models.RollingUpgradePolicy(max_batch_instance_percent=50)
            ),
            virtual_machine_profile=models.VirtualMachineScaleSetVMProfile(
                storage_profile=models.VirtualMachineScaleSetStorageProfile(
                    image_reference=models.ImageReference(
                        publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS", version="latest"
                    )
                ),
                extension_profile=models.VirtualMachineScaleSetExtensionProfile(
                    extensions=[
                        models.VirtualMachineScaleSetExtension(
                            name="HealthExtension",
                            properties=models.VirtualMachineScaleSetExtensionProperties(
                                publisher="Microsoft.ManagedServices",
                                type="ApplicationHealthLinux",
                                type_handler_version="2.0",
                                settings={"protocol": "tcp", "port": 8080},
                            ),
                        )
                    ]
                ),
            ),
        ),
    )
    created = sets.begin_create_or_update("rg-test", "sdk-made", body).result(timeout=30)
    assert created.sku.capacity == 6
    assert created.properties.upgrade_policy.rolling_upgrade_policy.max_batch_instance_percent == 50
    # properties.driver is the console's own (SPEC 8): the SDK keeps it as raw data; nothing else is unknown
    assert unknown_fields(created, created.as_dict()) == ["properties.driver"]
    assert created.as_dict()["properties"]["driver"] == "simulator"

    # every field we send is one the SDK models (VMs with instance views, set instance view)
    scale_set = ScaleSet.objects.get(name="sdk-made")
    vm = client.virtual_machine_scale_set_vms.get("rg-test", "sdk-made", "0", expand="instanceView")
    assert unknown_fields(vm, vm.as_dict()) == []
    view = sets.get_instance_view("rg-test", "sdk-made")
    assert unknown_fields(view, view.as_dict()) == []

    # a new image behind 'latest', then an OS rolling upgrade through the poller
    factories.publish(factories.NEW_VERSION, factories.region("eastus"))
    resume(
        sets.begin_start_os_upgrade
        if False
        else client.virtual_machine_scale_set_rolling_upgrades.begin_start_os_upgrade,
        "rg-test",
        "sdk-made",
        drive_until_done=lambda: drive(UpgradeRun.objects.get(scale_set=scale_set)),
    )
    assert set(Instance.objects.filter(scale_set=scale_set).values_list("os_image", flat=True)) == {factories.NEW_KEY}
    latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest("rg-test", "sdk-made")
    assert latest.properties.running_status.code == "Completed"
    assert latest.properties.progress.successful_instance_count == 6
    assert unknown_fields(latest, latest.as_dict()) == []

    history = list(sets.get_os_upgrade_history("rg-test", "sdk-made"))
    assert [h.properties.running_status.code for h in history] == ["Completed"]
    assert history[0].properties.started_by == "User"
    assert unknown_fields(history[0], history[0].as_dict()) == []

    # cancel: 409 with ARM's message when none runs
    from azure.core.exceptions import HttpResponseError

    with pytest.raises(HttpResponseError) as refused:
        client.virtual_machine_scale_set_rolling_upgrades.begin_cancel("rg-test", "sdk-made").result(timeout=30)
    assert refused.value.status_code == 409
    assert refused.value.error.message == "There is no ongoing Rolling Upgrade to cancel."

    # a model change (Manual mode now), then manualupgrade of one update domain's instances
    updated = sets.begin_update(
        "rg-test",
        "sdk-made",
        models.VirtualMachineScaleSetUpdate(
            sku=models.Sku(name="Standard_D4s_v3", capacity=6),
            properties=models.VirtualMachineScaleSetUpdateProperties(
                upgrade_policy=models.UpgradePolicy(mode="Manual")
            ),
        ),
    ).result(timeout=30)
    assert updated.sku.name == "Standard_D4s_v3"
    assert updated.properties.upgrade_policy.mode == "Manual"
    ud0 = [
        vm.instance_id
        for vm in client.virtual_machine_scale_set_vms.list("rg-test", "sdk-made", expand="instanceView")
        if vm.properties.instance_view.platform_update_domain == 0
    ]
    assert ud0
    assert all(
        not vm.properties.latest_model_applied
        for vm in client.virtual_machine_scale_set_vms.list("rg-test", "sdk-made")
    )
    resume(
        sets.begin_update_instances,
        "rg-test",
        "sdk-made",
        models.VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=ud0),
        drive_until_done=lambda: drive(UpgradeRun.objects.get(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD)),
    )
    applied = {
        vm.instance_id: vm.properties.latest_model_applied
        for vm in client.virtual_machine_scale_set_vms.list("rg-test", "sdk-made")
    }
    assert {i for i, done in applied.items() if done} == set(ud0)

    # an extension set to upgrade automatically
    extension = client.virtual_machine_scale_set_extensions.begin_create_or_update(
        "rg-test",
        "sdk-made",
        "HealthExtension",
        models.VirtualMachineScaleSetExtension(
            properties=models.VirtualMachineScaleSetExtensionProperties(
                publisher="Microsoft.ManagedServices",
                type="ApplicationHealthLinux",
                type_handler_version="2.0",
                enable_automatic_upgrade=True,
                settings={"protocol": "tcp", "port": 8080},
            )
        ),
    ).result(timeout=30)
    assert extension.properties.enable_automatic_upgrade is True
    assert unknown_fields(extension, extension.as_dict()) == []
    assert (
        sets.get("rg-test", "sdk-made")
        .properties.virtual_machine_profile.extension_profile.extensions[0]
        .properties.enable_automatic_upgrade
    )


@pytest.mark.django_db(transaction=True)
def test_sdk_cancel_poller_finishes_when_the_run_stops_r_cancel_1(live_server: Any, settings: Any, drive) -> None:
    from fleet.models import SupportedOsSku
    from upgrades.models import RunStatus, UpgradeRun

    settings.API_RETRY_AFTER_SECONDS = 0
    SupportedOsSku.objects.get_or_create(publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS")
    scale_set = factories.outdated_scale_set(10)
    client = sdk_client(live_server, "operators")
    rolling = client.virtual_machine_scale_set_rolling_upgrades
    rolling.begin_start_os_upgrade("rg-test", "web", polling=False)
    run = UpgradeRun.objects.get(scale_set=scale_set)
    drive(run, until=lambda r: r.current_batch >= 0)

    resume(rolling.begin_cancel, "rg-test", "web", drive_until_done=lambda: drive(run))

    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert rolling.get_latest("rg-test", "web").properties.running_status.code == "Cancelled"


def test_unknown_fields_finds_what_the_sdk_does_not_model() -> None:
    from azure.mgmt.compute import models

    sku = models.Sku({"name": "Standard_D2s_v3", "bogus": 1})
    assert unknown_fields(sku, {"name": "Standard_D2s_v3", "bogus": 1}) == ["bogus"]
    vmss = models.VirtualMachineScaleSet({"properties": {"upgradePolicy": {"mode": "Rolling", "extra": True}}})
    assert unknown_fields(vmss, vmss.as_dict()) == ["properties.upgradePolicy.extra"]
