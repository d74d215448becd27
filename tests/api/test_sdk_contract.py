"""Contract: the official Azure SDK (azure-mgmt-compute) reads our API over loopback.

The SDK's bearer policy refuses plain http (enforce_https). Over loopback in a test only, a
subclass of the SDK's own ARM policy turns that check off and otherwise authenticates exactly
as against Azure: it asks the credential for a token and sends `Authorization: Bearer …`.
"""

from typing import Any

import azure.mgmt.compute as azure_compute
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ResourceNotFoundError
from azure.core.pipeline import PipelineRequest
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy

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
