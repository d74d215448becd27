"""ARM JSON shapes of Microsoft.Compute resources, built from fleet rows (no queries here).

Names and nesting follow the public Microsoft.Compute REST API (api-version 2024-07-01):
VirtualMachineScaleSet, VirtualMachineScaleSetVM, VirtualMachineScaleSetVMInstanceView and
VirtualMachineScaleSetInstanceView. Protected extension settings are never returned.
Beyond ARM, a scale set carries `properties.driver` (SPEC 8; api.bodies reads it back).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from fleet.images import ImageRef
from fleet.models import (
    HealthState,
    ImageSource,
    Instance,
    OsType,
    PowerState,
    ProvisioningState,
    ScaleSet,
    ScaleSetExtension,
)
from fleet.versions import LATEST
from upgrades.models import UpgradeRun

SCALE_SET_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
VM_TYPE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines"

_PROVISIONING_DISPLAY = {
    ProvisioningState.CREATING: "Creating",
    ProvisioningState.UPDATING: "Updating",
    ProvisioningState.SUCCEEDED: "Provisioning succeeded",
    ProvisioningState.FAILED: "Provisioning failed",
}
_POWER_DISPLAY = {state: f"VM {state.value}" for state in PowerState}
_HEALTH_DISPLAY = {
    HealthState.HEALTHY: "The VM is healthy",
    HealthState.UNHEALTHY: "The VM is unhealthy",
    HealthState.INITIALIZING: "The VM health is initializing",
    HealthState.UNKNOWN: "The VM health is unknown",
}


def subscription(subscription_id: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription_id}",
        "subscriptionId": subscription_id,
        "displayName": subscription_id,
        "state": "Enabled",
    }


def unique_id(scale_set: ScaleSet) -> str:
    """A stable id per set (ARM's uniqueId): derived from the resource id, so it never changes."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, scale_set.resource_id.lower()))


def image_reference(scale_set: ScaleSet) -> dict[str, Any]:
    """The model's imageReference: publisher/offer/sku/version for a platform image, an id for
    a gallery image (its version id when pinned) or a custom image."""
    if scale_set.image_source == ImageSource.PLATFORM:
        return {
            "publisher": scale_set.image_publisher,
            "offer": scale_set.image_offer,
            "sku": scale_set.image_sku,
            "version": scale_set.image_version,
        }
    if scale_set.image_source == ImageSource.GALLERY and scale_set.gallery_image is not None:
        image_id = scale_set.gallery_image.resource_id
        if scale_set.image_version and scale_set.image_version != LATEST:
            image_id += f"/versions/{scale_set.image_version}"
        return {"id": image_id}
    return {"id": scale_set.custom_image_uri}


def health_probe_id(scale_set: ScaleSet) -> str:
    """The set's load-balancer probe as an ARM resource id. The console keeps the probe's
    settings on the set itself; the id names a load balancer '<set>-lb' and the probe by
    protocol and port, stable for as long as the probe does not change."""
    return (
        f"/subscriptions/{scale_set.subscription_id}/resourceGroups/{scale_set.resource_group}/providers/"
        f"Microsoft.Network/loadBalancers/{scale_set.name}-lb/probes/"
        f"{scale_set.health_probe_protocol}-{scale_set.health_probe_port}"
    )


def extension(ext: ScaleSetExtension) -> dict[str, Any]:
    return {
        "name": ext.name,
        "properties": {
            "publisher": ext.publisher,
            "type": ext.type,
            "typeHandlerVersion": ext.type_handler_version,
            "autoUpgradeMinorVersion": ext.auto_upgrade_minor_version,
            "enableAutomaticUpgrade": ext.enable_automatic_upgrade,
            "provisionAfterExtensions": list(ext.provision_after_extensions),
            "settings": ext.settings,
            "provisioningState": "Succeeded",
        },
    }


EXTENSION_TYPE = "Microsoft.Compute/virtualMachineScaleSets/extensions"


def extension_resource(ext: ScaleSetExtension, scale_set: ScaleSet) -> dict[str, Any]:
    """VirtualMachineScaleSetExtension as GET …/extensions/{name} answers it."""
    return {
        "id": f"{scale_set.resource_id}/extensions/{ext.name}",
        "type": EXTENSION_TYPE,
        **extension(ext),
    }


def scale_set(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> dict[str, Any]:
    """VirtualMachineScaleSet, with the console's own `properties.driver`: what its instances
    are (SPEC 8). SDKs ignore a property they do not know, and a set read with GET can still
    be sent back with PUT as it is (the same driver is accepted)."""
    s = scale_set
    profile: dict[str, Any] = {
        "storageProfile": {"imageReference": image_reference(s), "osDisk": {"osType": s.os_type}}
    }
    if s.os_type == OsType.WINDOWS:
        windows: dict[str, Any] = {}
        if s.enable_automatic_updates is not None:
            windows["enableAutomaticUpdates"] = s.enable_automatic_updates
        profile["osProfile"] = {"windowsConfiguration": windows}
    if s.has_health_probe:
        profile["networkProfile"] = {"healthProbe": {"id": health_probe_id(s)}}
    profile["extensionProfile"] = {"extensions": [extension(ext) for ext in extensions]}
    body: dict[str, Any] = {
        "id": s.resource_id,
        "name": s.name,
        "type": SCALE_SET_TYPE,
        "location": s.region.name,
        "sku": {"name": s.vm_size, "tier": "Standard", "capacity": s.capacity},
        "properties": {
            "upgradePolicy": {
                "mode": s.upgrade_mode,
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": s.max_batch_instance_percent,
                    "maxUnhealthyInstancePercent": s.max_unhealthy_instance_percent,
                    "maxUnhealthyUpgradedInstancePercent": s.max_unhealthy_upgraded_instance_percent,
                    "pauseTimeBetweenBatches": s.pause_time_between_batches,
                    "enableCrossZoneUpgrade": s.enable_cross_zone_upgrade,
                    "prioritizeUnhealthyInstances": s.prioritize_unhealthy_instances,
                    "rollbackFailedInstancesOnPolicyBreach": s.rollback_failed_instances_on_policy_breach,
                    "maxSurge": s.max_surge,
                },
                "automaticOSUpgradePolicy": {
                    "enableAutomaticOSUpgrade": s.enable_automatic_os_upgrade,
                    "disableAutomaticRollback": s.disable_automatic_rollback,
                    "useRollingUpgradePolicy": s.use_rolling_upgrade_policy,
                    "osRollingUpgradeDeferral": s.os_rolling_upgrade_deferral,
                },
            },
            "virtualMachineProfile": profile,
            "provisioningState": "Succeeded",
            "overprovision": False,
            "singlePlacementGroup": s.single_placement_group,
            "platformFaultDomainCount": s.platform_fault_domain_count,
            "driver": s.driver,
            "uniqueId": unique_id(s),
            "timeCreated": s.created_at.isoformat(),
        },
    }
    if s.zones:
        body["zones"] = list(s.zones)
    return body


# --- instances ----------------------------------------------------------------------------------


def latest_model_applied(instance: Instance, scale_set: ScaleSet) -> bool:
    """SPEC 2: derived, applied model version == the set's model version. A newer image behind
    'latest' does not change the model (as on Azure): bringing instances onto it is the job of
    OS upgrades, which report it through their own status, not through this flag."""
    return instance.model_version >= scale_set.model_version


def _status(code: str, display: str, *, level: str = "Info", message: str = "") -> dict[str, Any]:
    status = {"code": code, "level": level, "displayStatus": display}
    if message:
        status["message"] = message
    return status


def _provisioning_status(instance: Instance) -> dict[str, Any]:
    failed = instance.provisioning_state == ProvisioningState.FAILED
    return _status(
        f"ProvisioningState/{instance.provisioning_state}",
        _PROVISIONING_DISPLAY.get(ProvisioningState(instance.provisioning_state), instance.provisioning_state),
        level="Error" if failed else "Info",
        message=instance.last_error if failed else "",
    )


def virtual_machine(
    instance: Instance, scale_set: ScaleSet, data_disks: Iterable[Any], *, instance_view: dict[str, Any] | None = None
) -> dict[str, Any]:
    """VirtualMachineScaleSetVM."""
    reference = image_reference(scale_set)
    disk_image = ImageRef.from_key(instance.os_image) if instance.os_image else None
    if disk_image is not None and disk_image.version and "publisher" in reference:
        reference["exactVersion"] = disk_image.version
    vm_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scale_set.resource_id.lower()}/virtualmachines/{instance.pk}"))
    properties: dict[str, Any] = {
        "latestModelApplied": latest_model_applied(instance, scale_set),
        "vmId": vm_id,
        "hardwareProfile": {"vmSize": scale_set.vm_size},
        "storageProfile": {
            "imageReference": reference,
            "osDisk": {"name": instance.os_disk, "osType": scale_set.os_type, "createOption": "FromImage"},
            "dataDisks": [
                {
                    "lun": disk.lun,
                    "name": f"{instance.name}_lun{disk.lun}",
                    "diskSizeGB": disk.size_gb,
                    "createOption": "Empty",
                }
                for disk in data_disks
            ],
        },
        "osProfile": {"computerName": instance.name},
        "provisioningState": instance.provisioning_state.capitalize(),
        "protectionPolicy": {"protectFromScaleSetActions": instance.protected_from_scale_set_actions},
    }
    if instance_view is not None:
        properties["instanceView"] = instance_view
    body: dict[str, Any] = {
        "id": f"{scale_set.resource_id}/virtualMachines/{instance.instance_id}",
        "name": instance.name,
        "type": VM_TYPE,
        "location": scale_set.region.name,
        "instanceId": str(instance.instance_id),
        "sku": {"name": scale_set.vm_size, "tier": "Standard"},
        "properties": properties,
    }
    if instance.zone:
        body["zones"] = [instance.zone]
    return body


def has_health_source(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> bool:
    return scale_set.has_health_probe or any(ext.is_application_health for ext in extensions)


def vm_instance_view(
    instance: Instance, scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]
) -> dict[str, Any]:
    """VirtualMachineScaleSetVMInstanceView. vmHealth is present only when the set has a health
    source (a load-balancer probe or the Application Health extension), as on Azure."""
    by_name = {ext.name: ext for ext in extensions}
    extension_views = []
    for name, state in sorted(instance.extension_states.items()):
        model = by_name.get(name)
        outcome = str(state.get("state", "Succeeded")) if isinstance(state, dict) else "Succeeded"
        version = str(state.get("version", "")) if isinstance(state, dict) else ""
        extension_views.append(
            {
                "name": name,
                "type": f"{model.publisher}.{model.type}" if model else "",
                "typeHandlerVersion": version or (model.effective_version if model else ""),
                "statuses": [
                    _status(
                        f"ProvisioningState/{outcome.lower()}",
                        f"Provisioning {outcome.lower()}",
                        level="Error" if outcome.lower() == "failed" else "Info",
                    )
                ],
            }
        )
    view: dict[str, Any] = {
        "platformUpdateDomain": instance.update_domain,
        "platformFaultDomain": instance.fault_domain,
        "computerName": instance.name,
        "osName": scale_set.os_type,
        "statuses": [
            _provisioning_status(instance),
            _status(f"PowerState/{instance.power_state}", _POWER_DISPLAY[PowerState(instance.power_state)]),
        ],
        "extensions": extension_views,
    }
    if has_health_source(scale_set, extensions):
        health = HealthState(instance.health_state)
        view["vmHealth"] = {
            "status": _status(
                f"HealthState/{health.value.lower()}",
                _HEALTH_DISPLAY[health],
                level="Info" if health == HealthState.HEALTHY else "Warning",
            )
        }
    return view


def scale_set_instance_view(
    states: Iterable[tuple[str, str, dict[str, Any]]], extensions: Sequence[ScaleSetExtension]
) -> dict[str, Any]:
    """VirtualMachineScaleSetInstanceView from (provisioning state, power state, extension
    states) of every instance. virtualMachine.statusesSummary counts ProvisioningState/… codes
    and, beyond Azure's own summary, PowerState/… codes (an operator's first question)."""
    vm_codes: Counter[str] = Counter()
    extension_codes: dict[str, Counter[str]] = {ext.name: Counter() for ext in extensions}
    for provisioning, power, extension_states in states:
        vm_codes[f"ProvisioningState/{provisioning}"] += 1
        vm_codes[f"PowerState/{power}"] += 1
        for name, state in (extension_states or {}).items():
            outcome = str(state.get("state", "Succeeded")) if isinstance(state, dict) else "Succeeded"
            extension_codes.setdefault(name, Counter())[f"ProvisioningState/{outcome.lower()}"] += 1
    return {
        "virtualMachine": {
            "statusesSummary": [{"code": code, "count": count} for code, count in sorted(vm_codes.items())]
        },
        "extensions": [
            {"name": name, "statusesSummary": [{"code": code, "count": count} for code, count in sorted(codes.items())]}
            for name, codes in sorted(extension_codes.items())
        ],
        "statuses": [_status("ProvisioningState/succeeded", "Provisioning succeeded")],
    }


# --- rolling upgrades and OS upgrade history ----------------------------------------------------

ROLLING_UPGRADE_TYPE = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment is not None else None


def _iso_duration(seconds: float) -> str:
    whole = int(seconds)
    return f"PT{whole}S"


def run_progress(run: UpgradeRun) -> dict[str, int]:
    """RollingUpgradeProgressInfo: the four counts add up to the targeted instances (R-LOOP-1)."""
    return {
        "successfulInstanceCount": run.successful_count,
        "failedInstanceCount": run.failed_count,
        "inProgressInstanceCount": run.in_progress_count,
        "pendingInstanceCount": run.pending_count,
    }


def run_error(run: UpgradeRun) -> dict[str, Any] | None:
    if not run.error_code:
        return None
    error: dict[str, Any] = {"code": run.error_code, "message": run.error_message}
    if run.error_details:
        error["details"] = run.error_details
    return error


def target_image_reference(run: UpgradeRun, scale_set: ScaleSet) -> dict[str, Any]:
    """The image the run upgraded to, as an imageReference."""
    image = ImageRef.from_key(run.target_image)
    if image.source == ImageSource.PLATFORM:
        publisher, offer, sku = image.name.split("/", 2)
        return {"publisher": publisher, "offer": offer, "sku": sku, "version": image.version}
    if image.source == ImageSource.GALLERY and scale_set.gallery_image is not None:
        return {"id": f"{scale_set.gallery_image.resource_id}/versions/{image.version}"}
    return {"id": image.name}


def rolling_upgrade_status(run: UpgradeRun, scale_set: ScaleSet) -> dict[str, Any]:
    """RollingUpgradeStatusInfo (GET rollingUpgrades/latest): the policy the run runs under,
    its status, progress and error."""
    policy = run.policy_snapshot
    properties: dict[str, Any] = {
        "policy": {
            "maxBatchInstancePercent": policy.max_batch_instance_percent,
            "maxUnhealthyInstancePercent": policy.max_unhealthy_instance_percent,
            "maxUnhealthyUpgradedInstancePercent": policy.max_unhealthy_upgraded_instance_percent,
            "pauseTimeBetweenBatches": _iso_duration(policy.pause_seconds),
            "enableCrossZoneUpgrade": policy.enable_cross_zone_upgrade,
            "prioritizeUnhealthyInstances": policy.prioritize_unhealthy_instances,
            "rollbackFailedInstancesOnPolicyBreach": policy.rollback_failed_instances_on_policy_breach,
        },
        "runningStatus": {
            "code": run.status,
            "startTime": _iso(run.started_at),
            "lastAction": run.last_action,
            "lastActionTime": _iso(run.last_action_at),
        },
        "progress": run_progress(run),
    }
    if error := run_error(run):
        properties["error"] = error
    return {
        "name": scale_set.name,
        "type": ROLLING_UPGRADE_TYPE,
        "location": scale_set.region.name,
        "properties": properties,
    }


def os_upgrade_history_entry(run: UpgradeRun, scale_set: ScaleSet) -> dict[str, Any]:
    """UpgradeOperationHistoricalStatusInfo (GET osUpgradeHistory, R-HIST-1)."""
    rollback: dict[str, Any] = {
        "successfullyRolledbackInstanceCount": run.rolled_back_count,
        "failedRolledbackInstanceCount": run.rollback_failed_count,
    }
    if run.rollback_error:
        rollback["rollbackError"] = {"code": "RollbackFailed", "message": run.rollback_error}
    properties: dict[str, Any] = {
        "runningStatus": {"code": run.status, "startTime": _iso(run.started_at), "endTime": _iso(run.ended_at)},
        "progress": run_progress(run),
        "startedBy": run.started_by,
        "targetImageReference": target_image_reference(run, scale_set),
        "rollbackInfo": rollback,
    }
    if error := run_error(run):
        properties["error"] = error
    return {"properties": properties, "type": ROLLING_UPGRADE_TYPE, "location": scale_set.region.name}
