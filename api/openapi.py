"""The OpenAPI description of the whole API, served by the app (SPEC 7).

Built from small pieces of Python data: one helper per repeated shape (a JSON object, a list
envelope, the ARM error answers), the request schemas of scale sets and extensions from the
readers' own field tables (api.bodies.PLAIN, api.bodies.EXTENSION_PROPERTIES) and enums from
the models' choices, so the description moves with the code it describes.

Response schemas list every property the views send (api.shapes, api.catalog, api.console);
`required` names those always sent, `nullable` marks those that can be null, and objects stay
open (additionalProperties) as ARM's own descriptions are. tests/api/test_openapi.py checks
that every route is described and fuzzes the app against this description.
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from api import arm, plan_views
from api.bodies import EXTENSION_PROPERTIES, MAX_INT, PLAIN
from api.models import OperationStatus
from fleet.models import DriverName, HealthState, OsType, ReplicationState, UpgradeMode
from fleet.models import ProvisioningState as VmProvisioningState
from upgrades.models import BatchStatus, Kind, LastAction, Phase, RunStatus, StartedBy

Schema = dict[str, Any]

OPENAPI_VERSION = "3.0.3"
API_VERSION = "2024-07-01"  # the version the shapes follow; any from 2018-10-01 on is accepted
JSON = "application/json"
BEARER = "bearerAuth"

# --- schema helpers ------------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(*, enum: list[str] | None = None, fmt: str | None = None, nullable: bool = False, **extra: Any) -> Schema:
    schema: Schema = {"type": "string", **extra}
    if enum is not None:
        schema["enum"] = list(enum)
    if fmt is not None:
        schema["format"] = fmt
    if nullable:
        schema["nullable"] = True
    return schema


def integer(*, nullable: bool = False, **extra: Any) -> Schema:
    return {"type": "integer", **extra, **({"nullable": True} if nullable else {})}


def number(*, nullable: bool = False, **extra: Any) -> Schema:
    return {"type": "number", **extra, **({"nullable": True} if nullable else {})}


def boolean(**extra: Any) -> Schema:
    return {"type": "boolean", **extra}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def obj(properties: dict[str, Schema], *, required: tuple[str, ...] | str = (), **extra: Any) -> Schema:
    """An open JSON object; `required` = "all" when every listed property is always sent."""
    names = list(properties) if required == "all" else list(required)
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if names:
        schema["required"] = names
    return schema


def nullable_ref(name: str) -> Schema:
    return {"allOf": [ref(name)], "nullable": True}


def timestamp(*, nullable: bool = False) -> Schema:
    return string(fmt="date-time", nullable=nullable)


def list_envelope(item: Schema, *, paged: bool) -> Schema:
    """ARM's list: {value, nextLink?}; nextLink (absolute) only while there is more."""
    properties = {"value": array(item)}
    if paged:
        properties["nextLink"] = string(fmt="uri", description="Absolute URL of the next page; absent on the last.")
    return obj(properties, required=("value",))


def enum_of(choices: Any) -> list[str]:
    return [str(value) for value in choices.values]


# --- shared schemas ------------------------------------------------------------------------------


def _error_schemas() -> dict[str, Schema]:
    return {
        "ErrorDetail": obj({"code": string(), "target": string(), "message": string()}),
        "ErrorBody": obj(
            {
                "code": string(),
                "message": string(),
                "target": string(description="The property (JSON path) or parameter at fault."),
                "details": array(ref("ErrorDetail")),
            },
            required=("code", "message"),
        ),
        "ErrorResponse": obj({"error": ref("ErrorBody")}, required="all", description="ARM's error envelope."),
    }


def _status() -> Schema:
    return obj(
        {
            "code": string(),
            "level": string(enum=["Info", "Warning", "Error"]),
            "displayStatus": string(),
            "message": string(),
        },
        required=("code", "level", "displayStatus"),
    )


def _image_reference() -> Schema:
    return obj(
        {
            "publisher": string(),
            "offer": string(),
            "sku": string(),
            "version": string(description="A version or 'latest'."),
            "exactVersion": string(description="The version the instance's OS disk was made from (VMs only)."),
            "id": string(description="A gallery image (…/images/{i}[/versions/{v}]) or custom image id."),
        },
        description="{publisher, offer, sku, version} of a platform image, or {id}.",
    )


def _extension_properties() -> Schema:
    return obj(
        {
            "publisher": string(),
            "type": string(),
            "typeHandlerVersion": string(),
            "autoUpgradeMinorVersion": boolean(),
            "enableAutomaticUpgrade": boolean(),
            "provisionAfterExtensions": array(string()),
            "settings": obj({}),
            "provisioningState": string(),
        },
        required="all",
    )


def _scale_set() -> Schema:
    rolling = obj(
        {
            "maxBatchInstancePercent": integer(),
            "maxUnhealthyInstancePercent": integer(),
            "maxUnhealthyUpgradedInstancePercent": integer(),
            "pauseTimeBetweenBatches": string(description="ISO 8601 duration"),
            "enableCrossZoneUpgrade": boolean(),
            "prioritizeUnhealthyInstances": boolean(),
            "rollbackFailedInstancesOnPolicyBreach": boolean(),
            "maxSurge": boolean(),
        },
        required="all",
    )
    automatic = obj(
        {
            "enableAutomaticOSUpgrade": boolean(),
            "disableAutomaticRollback": boolean(),
            "useRollingUpgradePolicy": boolean(),
            "osRollingUpgradeDeferral": boolean(),
        },
        required="all",
    )
    profile = obj(
        {
            "storageProfile": obj(
                {"imageReference": ref("ImageReference"), "osDisk": obj({"osType": string(enum=enum_of(OsType))})},
                required="all",
            ),
            "osProfile": obj(
                {"windowsConfiguration": obj({"enableAutomaticUpdates": boolean()})},
                description="Windows sets only.",
            ),
            "networkProfile": obj(
                {"healthProbe": obj({"id": string()}, required="all")},
                description="Only when the set has a load-balancer health probe.",
            ),
            "extensionProfile": obj({"extensions": array(ref("VirtualMachineScaleSetExtensionProfileItem"))}),
        },
        required=("storageProfile", "extensionProfile"),
    )
    return obj(
        {
            "id": string(),
            "name": string(),
            "type": string(enum=["Microsoft.Compute/virtualMachineScaleSets"]),
            "location": string(),
            "sku": obj({"name": string(), "tier": string(), "capacity": integer()}, required="all"),
            "zones": array(string(), description="Only when the set is zonal."),
            "properties": obj(
                {
                    "upgradePolicy": obj(
                        {
                            "mode": string(enum=enum_of(UpgradeMode)),
                            "rollingUpgradePolicy": rolling,
                            "automaticOSUpgradePolicy": automatic,
                        },
                        required="all",
                    ),
                    "virtualMachineProfile": profile,
                    "provisioningState": string(),
                    "overprovision": boolean(),
                    "singlePlacementGroup": boolean(),
                    "platformFaultDomainCount": integer(),
                    "driver": string(
                        enum=enum_of(DriverName),
                        description="Beyond ARM (SPEC 8): what the instances are. Fixed when the set is created.",
                    ),
                    "uniqueId": string(fmt="uuid"),
                    "timeCreated": timestamp(),
                },
                required="all",
            ),
        },
        required=("id", "name", "type", "location", "sku", "properties"),
        description="VirtualMachineScaleSet. Protected extension settings are never returned.",
    )


def _nest(tree: Schema, path: tuple[str, ...], leaf: Schema) -> None:
    """Put `leaf` at `path` inside an object schema, making the objects on the way."""
    node = tree
    for key in path[:-1]:
        node = node["properties"].setdefault(key, obj({}))
    node["properties"][path[-1]] = leaf


_JSON_TYPE: dict[type, Schema] = {
    int: integer(minimum=0, maximum=MAX_INT),
    bool: boolean(),
    str: string(),
    list: array(string()),
    dict: obj({}),
}


def _scale_set_update() -> Schema:
    """What PUT and PATCH read (api.bodies.scale_set_body): the plain properties from its table,
    then the ones read by hand. Anything else (read-only or not modelled) is ignored."""
    tree = obj(
        {"location": string(description="Required to create a set; must stay the set's location.")},
        description=(
            "VirtualMachineScaleSet as PUT (create or update) and PATCH read it. Enum values match "
            "case-insensitively. A set read with GET can be sent back as it is."
        ),
    )
    for path, _name, kind in PLAIN:
        _nest(tree, path, dict(_JSON_TYPE[kind]))
    _nest(tree, ("sku", "capacity"), integer(minimum=0, maximum=MAX_INT))
    _nest(tree, ("zones",), array(string(), description="Fixed when the set is created."))
    _nest(tree, ("properties", "upgradePolicy", "mode"), string(description=", ".join(enum_of(UpgradeMode))))
    _nest(
        tree,
        ("properties", "driver"),
        string(description=f"{', '.join(enum_of(DriverName))} (default simulator); fixed when the set is created."),
    )
    profile = ("properties", "virtualMachineProfile")
    _nest(tree, (*profile, "storageProfile", "imageReference"), ref("ImageReference"))
    _nest(
        tree,
        (*profile, "networkProfile", "healthProbe"),
        obj({"id": string(description="…/probes/{tcp|http}-{port}")}, required="all"),
    )
    _nest(tree, (*profile, "extensionProfile", "extensions"), array(ref("VirtualMachineScaleSetExtensionInput")))
    return tree


def _extension_input() -> Schema:
    """What PUT …/extensions/{name} reads (api.bodies.extension_body), from its table."""
    properties = obj(
        {key: dict(_JSON_TYPE[kind]) for key, _name, kind in EXTENSION_PROPERTIES},
        required=("publisher", "type", "typeHandlerVersion"),
    )
    return obj(
        {
            "name": string(description="In a set's extension list; the URL names it in PUT …/extensions/{name}."),
            "properties": properties,
        },
        required=("properties",),
        description="VirtualMachineScaleSetExtension. protectedSettings are stored, never returned.",
    )


def _virtual_machine() -> Schema:
    data_disk = obj(
        {"lun": integer(), "name": string(), "diskSizeGB": integer(), "createOption": string()}, required="all"
    )
    return obj(
        {
            "id": string(),
            "name": string(),
            "type": string(enum=["Microsoft.Compute/virtualMachineScaleSets/virtualMachines"]),
            "location": string(),
            "instanceId": string(),
            "sku": obj({"name": string(), "tier": string()}, required="all"),
            "zones": array(string()),
            "properties": obj(
                {
                    "latestModelApplied": boolean(),
                    "vmId": string(fmt="uuid"),
                    "hardwareProfile": obj({"vmSize": string()}, required="all"),
                    "storageProfile": obj(
                        {
                            "imageReference": ref("ImageReference"),
                            "osDisk": obj(
                                {"name": string(), "osType": string(enum=enum_of(OsType)), "createOption": string()},
                                required="all",
                            ),
                            "dataDisks": array(data_disk),
                        },
                        required="all",
                    ),
                    "osProfile": obj({"computerName": string()}, required="all"),
                    "provisioningState": string(enum=[v.capitalize() for v in enum_of(VmProvisioningState)]),
                    "protectionPolicy": obj({"protectFromScaleSetActions": boolean()}, required="all"),
                    "instanceView": ref("VirtualMachineScaleSetVMInstanceView"),
                },
                required=(
                    "latestModelApplied",
                    "vmId",
                    "hardwareProfile",
                    "storageProfile",
                    "osProfile",
                    "provisioningState",
                    "protectionPolicy",
                ),
            ),
        },
        required=("id", "name", "type", "location", "instanceId", "sku", "properties"),
        description="VirtualMachineScaleSetVM; properties.instanceView only with $expand=instanceView.",
    )


def _vm_instance_view() -> Schema:
    extension_view = obj(
        {
            "name": string(),
            "type": string(),
            "typeHandlerVersion": string(),
            "statuses": array(ref("InstanceViewStatus")),
        },
        required="all",
    )
    return obj(
        {
            "platformUpdateDomain": integer(),
            "platformFaultDomain": integer(),
            "computerName": string(),
            "osName": string(),
            "statuses": array(ref("InstanceViewStatus"), description="ProvisioningState/…, PowerState/…"),
            "extensions": array(extension_view),
            "vmHealth": obj(
                {"status": ref("InstanceViewStatus")},
                required="all",
                description=(
                    "Only when the set has a health source. Codes: "
                    + ", ".join(f"HealthState/{v.lower()}" for v in enum_of(HealthState))
                ),
            ),
        },
        required=("platformUpdateDomain", "platformFaultDomain", "computerName", "osName", "statuses", "extensions"),
        description="VirtualMachineScaleSetVMInstanceView.",
    )


def _scale_set_instance_view() -> Schema:
    summary = array(obj({"code": string(), "count": integer()}, required="all"))
    return obj(
        {
            "virtualMachine": obj({"statusesSummary": summary}, required="all"),
            "extensions": array(obj({"name": string(), "statusesSummary": summary}, required="all")),
            "statuses": array(ref("InstanceViewStatus")),
        },
        required="all",
        description="VirtualMachineScaleSetInstanceView; statusesSummary counts ProvisioningState/… and PowerState/….",
    )


def _progress() -> Schema:
    names = ("successfulInstanceCount", "failedInstanceCount", "inProgressInstanceCount", "pendingInstanceCount")
    return obj({name: integer() for name in names}, required="all")


def _rolling_upgrade_status() -> Schema:
    policy = obj(
        {
            "maxBatchInstancePercent": integer(),
            "maxUnhealthyInstancePercent": integer(),
            "maxUnhealthyUpgradedInstancePercent": integer(),
            "pauseTimeBetweenBatches": string(),
            "enableCrossZoneUpgrade": boolean(),
            "prioritizeUnhealthyInstances": boolean(),
            "rollbackFailedInstancesOnPolicyBreach": boolean(),
        },
        required="all",
    )
    running = obj(
        {
            "code": string(enum=enum_of(RunStatus)),
            "startTime": timestamp(nullable=True),
            "lastAction": string(enum=enum_of(LastAction)),
            "lastActionTime": timestamp(nullable=True),
        },
        required="all",
    )
    return obj(
        {
            "name": string(),
            "type": string(enum=["Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"]),
            "location": string(),
            "properties": obj(
                {
                    "policy": policy,
                    "runningStatus": running,
                    "progress": ref("RollingUpgradeProgressInfo"),
                    "error": ref("ErrorBody"),
                },
                required=("policy", "runningStatus", "progress"),
            ),
        },
        required="all",
        description="RollingUpgradeStatusInfo.",
    )


def _os_upgrade_history_entry() -> Schema:
    rollback = obj(
        {
            "successfullyRolledbackInstanceCount": integer(),
            "failedRolledbackInstanceCount": integer(),
            "rollbackError": ref("ErrorBody"),
        },
        required=("successfullyRolledbackInstanceCount", "failedRolledbackInstanceCount"),
    )
    return obj(
        {
            "properties": obj(
                {
                    "runningStatus": obj(
                        {
                            "code": string(enum=enum_of(RunStatus)),
                            "startTime": timestamp(nullable=True),
                            "endTime": timestamp(nullable=True),
                        },
                        required="all",
                    ),
                    "progress": ref("RollingUpgradeProgressInfo"),
                    "startedBy": string(enum=enum_of(StartedBy)),
                    "targetImageReference": ref("ImageReference"),
                    "rollbackInfo": rollback,
                    "error": ref("ErrorBody"),
                },
                required=("runningStatus", "progress", "startedBy", "targetImageReference", "rollbackInfo"),
            ),
            "type": string(enum=["Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"]),
            "location": string(),
        },
        required="all",
        description="UpgradeOperationHistoricalStatusInfo.",
    )


def _catalog_schemas() -> dict[str, Schema]:
    entry = obj({"name": string(), "location": string(), "id": string()}, required="all")
    image = obj(
        {
            **entry["properties"],
            "properties": obj(
                {
                    "osDiskImage": obj({"operatingSystem": string(enum=enum_of(OsType))}, required="all"),
                    "dataDiskImages": array(obj({})),
                    "automaticOSUpgradeProperties": obj({"automaticOSUpgradeSupported": boolean()}, required="all"),
                },
                required="all",
            ),
        },
        required="all",
        description="VirtualMachineImage: only what the console knows.",
    )
    version = obj(
        {
            "id": string(),
            "name": string(),
            "type": string(enum=["Microsoft.Compute/galleries/images/versions"]),
            "location": string(),
            "properties": obj(
                {
                    "publishingProfile": obj(
                        {
                            "targetRegions": array(
                                obj({"name": string(), "regionalReplicaCount": integer()}, required="all")
                            ),
                            "excludeFromLatest": boolean(),
                            "publishedDate": timestamp(),
                        },
                        required="all",
                    ),
                    "provisioningState": string(),
                    "replicationStatus": obj(
                        {
                            "aggregatedState": string(enum=["Completed", "InProgress"]),
                            "summary": array(
                                obj(
                                    {
                                        "region": string(),
                                        "state": string(enum=enum_of(ReplicationState)),
                                        "progress": integer(minimum=0, maximum=100),
                                    },
                                    required="all",
                                )
                            ),
                        },
                        required="all",
                    ),
                },
                required="all",
            ),
        },
        required="all",
        description="GalleryImageVersion.",
    )
    version_input = obj(
        {
            "location": string(description="The gallery's region."),
            "properties": obj(
                {
                    "publishingProfile": obj(
                        {
                            "targetRegions": array(
                                obj(
                                    {
                                        "name": string(),
                                        "regionalReplicaCount": integer(
                                            minimum=1, maximum=1, description="The simulator keeps one replica."
                                        ),
                                    },
                                    required=("name",),
                                ),
                                minItems=1,
                                maxItems=100,
                                description="Default: the gallery's region.",
                            ),
                            "excludeFromLatest": boolean(),
                            "replicationSeconds": number(
                                minimum=0,
                                maximum=86_400,
                                description="Not ARM: simulated seconds replication to each region takes (on create).",
                            ),
                        }
                    )
                }
            ),
        },
        required=("location", "properties"),
        description=(
            "GalleryImageVersion as PUT reads it. A re-PUT with the same targetRegions and "
            "excludeFromLatest answers 200; one that changes them, 409 PropertyChangeNotAllowed."
        ),
    )
    return {
        "CatalogEntry": entry,
        "VirtualMachineImage": image,
        "GalleryImageVersion": version,
        "GalleryImageVersionInput": version_input,
    }


def _console_schemas() -> dict[str, Schema]:
    knobs = {
        "neverHealthyShare": number(minimum=0, maximum=1, description="Share of instances never healthy."),
        "provisioningFailureShare": number(minimum=0, maximum=1, description="Share whose provisioning fails."),
        "bootSeconds": number(minimum=0, maximum=3600, description="Simulated boot time; absent: the default."),
    }
    name = string(minLength=1, maxLength=100, pattern=r"^[A-Za-z0-9._-]+$")
    run_counts = ("successful", "failed", "inProgress", "pending", "skipped", "rolledBack", "rollbackFailed")
    run = obj(
        {
            "id": integer(),
            "scaleSet": obj({"id": string(), "name": string()}, required="all"),
            "kind": string(enum=enum_of(Kind)),
            "status": string(enum=enum_of(RunStatus)),
            "phase": string(enum=enum_of(Phase)),
            "phaseDescription": string(),
            "startedBy": string(enum=enum_of(StartedBy)),
            "actor": string(nullable=True, description="The user who started it; null for the platform."),
            "startedAt": timestamp(),
            "endedAt": timestamp(nullable=True),
            "lastAction": string(enum=enum_of(LastAction)),
            "lastActionAt": timestamp(),
            "cancelRequested": boolean(),
            "target": obj(
                {
                    "image": string(nullable=True, description="Image key; null for extension upgrades."),
                    "modelVersion": integer(),
                    "extensions": obj({}, additionalProperties=string(), description="{extension name: version}"),
                    "label": string(),
                },
                required="all",
            ),
            "policy": obj({}, description="The policy snapshot the run runs under (camelCase keys)."),
            "batchCount": integer(),
            "currentBatch": integer(),
            "counts": obj({count: integer() for count in run_counts}, required="all"),
            "rollbackError": string(nullable=True),
            "error": nullable_ref("ErrorBody"),
        },
        required="all",
        description="An upgrade run.",
    )
    batch = obj(
        {
            "index": integer(),
            "status": string(enum=enum_of(BatchStatus)),
            "updateDomain": integer(description="-1 for an all-at-once batch"),
            "zone": string(nullable=True),
            "size": integer(),
            "instanceIds": array(string()),
            "startedAt": timestamp(nullable=True),
            "upgradedAt": timestamp(nullable=True),
            "endedAt": timestamp(nullable=True),
        },
        required="all",
    )
    return {
        **_plan_schemas(),
        "FaultProfile": obj({"target": string(), **knobs, "bootSeconds": number(nullable=True)}, required="all"),
        "FaultKnobs": obj(
            knobs,
            description="The simulator's knobs for a version (PUT replaces the whole profile: absent shares are 0).",
        ),
        "PlatformImageVersionInput": obj(
            {
                "publisher": name,
                "offer": name,
                "sku": name,
                "version": string(minLength=1, maxLength=64),
                "locations": array(string(minLength=1, maxLength=40), minItems=1, maxItems=100),
                "faults": ref("FaultKnobs"),
            },
            required=("publisher", "offer", "sku", "version", "locations"),
        ),
        "PlatformImageVersion": obj(
            {
                "publisher": string(),
                "offer": string(),
                "sku": string(),
                "version": string(),
                "publishedIn": array(obj({"location": string(), "publishedAt": timestamp()}, required="all")),
                "faults": nullable_ref("FaultProfile"),
            },
            required="all",
        ),
        "ExtensionVersionInput": obj(
            {
                "publisher": name,
                "type": name,
                "version": string(minLength=1, maxLength=64),
                "faults": ref("FaultKnobs"),
            },
            required=("publisher", "type", "version"),
        ),
        "ExtensionVersion": obj(
            {
                "publisher": string(),
                "type": string(),
                "version": string(),
                "publishedAt": timestamp(),
                "key": string(description="publisher.type@version, the fault profile target"),
                "faults": nullable_ref("FaultProfile"),
            },
            required="all",
        ),
        "MaintenanceInput": obj(
            {
                "instanceIds": {
                    "oneOf": [
                        string(enum=["*"]),
                        array({"oneOf": [string(), integer(minimum=0)]}, minItems=1, maxItems=1000),
                    ]
                },
                "on": boolean(description="true starts maintenance (instances turn unhealthy), false ends it."),
            },
            required="all",
        ),
        "Maintenance": obj({"instanceIds": array(string()), "underMaintenance": boolean()}, required="all"),
        "UpgradeRun": run,
        "UpgradeRunDetail": obj(
            {**run["properties"], "batches": array(batch)},
            required="all",
            description="An upgrade run with its batches.",
        ),
        "RunEvent": obj(
            {
                "id": integer(),
                "at": timestamp(),
                "batchIndex": integer(nullable=True),
                "instanceId": string(description="Absent for events of the run itself."),
                "fromState": string(nullable=True),
                "toState": string(),
                "message": string(),
            },
            required=("id", "at", "batchIndex", "fromState", "toState", "message"),
        ),
    }


def _plan_schemas() -> dict[str, Schema]:
    """What POST …/plan reads (api.plan_views) and answers (upgrades.preview.Preview.as_json,
    whatif_json, upgrades.whatif.WhatIf.as_json)."""
    seconds = number(minimum=0, description="Simulated seconds")
    domains = plan_views.MOST_DOMAIN
    what_if_batch = obj(
        {
            "number": integer(minimum=1),
            "updateDomain": integer(description="-1 for an all-at-once batch"),
            "zone": string(description="Empty when the set is not zonal"),
            "size": integer(),
            "failed": integer(description="Instances of the batch that would not become healthy"),
            "rolledBack": integer(),
            "upgradedSoFar": integer(),
            "unhealthyUpgradedSoFar": integer(description="R-GATE-3's count, rolled back or not"),
            "toleratedUpgraded": integer(description="The most R-GATE-3 lets pass after this batch"),
            "setUnhealthyBefore": integer(description="R-GATE-1/2's count before the batch"),
            "toleratedSet": integer(),
            "startsAt": number(description="Simulated seconds from the start"),
            "endsAt": number(description="Simulated seconds from the start"),
        },
        required="all",
    )
    what_if = obj(
        {
            "failureShare": number(minimum=0, maximum=1, description="The assumed share never healthy on the target"),
            "bootSeconds": number(minimum=0, description="The assumed boot time (simulated seconds)"),
            "summary": string(description="How the run would end, in one sentence"),
            "totalText": string(),
            "timeScale": number(),
            "plannedBatches": integer(),
            "completed": boolean(),
            "stopCode": string(nullable=True, description="The gate's error code; null when the run completes"),
            "stopBatch": integer(nullable=True, description="The batch before or after which it stops"),
            "stopBefore": boolean(description="Stops before the batch (R-GATE-1/2) or after it (R-GATE-3)"),
            "upgraded": integer(),
            "hit": integer(description="Upgraded instances that would not become healthy"),
            "rolledBack": integer(),
            "rollbackSeconds": seconds,
            "totalSeconds": seconds,
            "failingInstanceIds": array(string()),
            "plannedUpgraded": array(integer(), description="Had every batch run: upgraded after each"),
            "plannedTolerated": array(integer(), description="… and the most R-GATE-3 lets pass then"),
            "batches": array(what_if_batch, description="The batches that would start"),
        },
        required="all",
        description="The plan played forward against an assumed failure share and boot time.",
    )
    batch = obj(
        {
            "number": integer(minimum=1),
            "updateDomain": integer(description="-1 for an all-at-once batch"),
            "zone": string(description="Empty when the set is not zonal"),
            "instanceIds": array(string()),
        },
        required="all",
    )
    plan = obj(
        {
            "action": string(enum=["manual", "rolling", "os_upgrade"]),
            "title": string(),
            "kind": string(enum=enum_of(Kind)),
            "blastRadius": string(),
            "targetImage": string(description="The target's image key"),
            "targetModelVersion": integer(),
            "instanceCount": integer(description="Instances the run would upgrade"),
            "setInstanceCount": integer(),
            "batchSize": integer(),
            "rounding": string(description="How the batch size was rounded (R-BATCH-1)"),
            "batches": array(batch, description="In the order they would run"),
            "gates": array(string(), description="The health gates, as instance counts"),
            "skipped": array(obj({"instanceId": string(), "reason": string()}, required="all")),
            "rollback": string(),
            "rollsBack": boolean(description="Failed instances are rolled back"),
            "rollsBackOnBreach": boolean(description="… when a batch breaches a gate"),
            "eta": string(),
            "etaSeconds": number(description="Simulated seconds, every instance healthy"),
            "timeScale": number(),
            "timeNote": string(),
            "notes": array(string()),
            "policy": obj(
                {
                    "maxBatchInstancePercent": integer(),
                    "maxUnhealthyInstancePercent": integer(),
                    "maxUnhealthyUpgradedInstancePercent": integer(),
                    "pauseSeconds": seconds,
                    "healthWaitSeconds": seconds,
                    "allAtOnce": boolean(),
                },
                required="all",
            ),
            "whatIf": ref("UpgradeWhatIf"),
        },
        required="all",
        description="A plan preview: what the action would do, computed by the code the action runs.",
    )
    plan_input = obj(
        {
            "action": string(enum=list(plan_views.ACTIONS), description="The action to plan"),
            "instanceIds": array(
                {"oneOf": [string(), integer()]},
                minItems=1,
                maxItems=plan_views.MOST_INSTANCE_IDS,
                description='manualupgrade: instance ids (strings; numbers are taken too); "*" means all.',
            ),
            "updateDomain": integer(minimum=0, maximum=domains, description="manualupgrade: an update domain"),
            "faultDomain": integer(minimum=0, maximum=domains, description="manualupgrade: a fault domain"),
            "zone": string(minLength=1, maxLength=8, pattern=r"\S", description="manualupgrade: a zone"),
            "batchSize": integer(
                minimum=1, maximum=plan_views.MOST_BATCH_SIZE, description="rolling: instances per batch"
            ),
            "pauseSeconds": number(
                minimum=0, maximum=plan_views.MOST_PAUSE_SECONDS, description="rolling: pause between batches"
            ),
            "failureShare": number(
                minimum=0, maximum=1, description="What-if: share never healthy (default: the target's profile)"
            ),
            "bootSeconds": number(
                minimum=0,
                maximum=plan_views.MOST_BOOT_SECONDS,
                description="What-if: boot time (default: the target's or the simulator's)",
            ),
        },
        required=("action",),
        description=(
            "manualupgrade takes exactly one of instanceIds, updateDomain, faultDomain and zone (R-MAN-1); "
            "the other actions ignore them, and only rolling reads batchSize and pauseSeconds."
        ),
    )
    return {"UpgradePlanInput": plan_input, "UpgradePlan": plan, "UpgradeWhatIf": what_if}


def schemas() -> dict[str, Schema]:
    return {
        **_error_schemas(),
        "Subscription": obj(
            {"id": string(), "subscriptionId": string(), "displayName": string(), "state": string(enum=["Enabled"])},
            required="all",
        ),
        "ImageReference": _image_reference(),
        "InstanceViewStatus": _status(),
        "VirtualMachineScaleSetExtensionProfileItem": obj(
            {"name": string(), "properties": _extension_properties()}, required="all"
        ),
        "VirtualMachineScaleSetExtension": obj(
            {
                "id": string(),
                "type": string(enum=["Microsoft.Compute/virtualMachineScaleSets/extensions"]),
                "name": string(),
                "properties": _extension_properties(),
            },
            required="all",
        ),
        "VirtualMachineScaleSetExtensionInput": _extension_input(),
        "VirtualMachineScaleSet": _scale_set(),
        "VirtualMachineScaleSetUpdate": _scale_set_update(),
        "VirtualMachineScaleSetInstanceView": _scale_set_instance_view(),
        "VirtualMachineScaleSetVM": _virtual_machine(),
        "VirtualMachineScaleSetVMInstanceView": _vm_instance_view(),
        "VirtualMachineScaleSetVMInstanceIDs": obj(
            {
                "instanceIds": array(
                    {"oneOf": [string(), integer()]},
                    minItems=1,
                    description='Instance ids (strings; numbers are taken too); "*" means all.',
                )
            },
            description="Omitted or without instanceIds: every instance (not for manualupgrade).",
        ),
        "RollingUpgradeProgressInfo": _progress(),
        "RollingUpgradeStatusInfo": _rolling_upgrade_status(),
        "UpgradeOperationHistoricalStatusInfo": _os_upgrade_history_entry(),
        "OperationStatus": obj(
            {
                "name": string(fmt="uuid"),
                "status": string(enum=enum_of(OperationStatus)),
                "startTime": timestamp(),
                "endTime": timestamp(),
                "error": ref("ErrorBody"),
            },
            required=("name", "status", "startTime"),
            description="The operation-status resource (Azure-AsyncOperation); endTime and error once ended.",
        ),
        **_catalog_schemas(),
        **_console_schemas(),
        "OpenApiDocument": obj(
            {
                "openapi": string(),
                "info": obj({}),
                "servers": array(obj({})),
                "security": array(obj({})),
                "paths": obj({}),
                "components": obj({}),
            },
            required="all",
            description="An OpenAPI 3.0 document: this one.",
        ),
    }


# --- parameters and responses ----------------------------------------------------------------------

SEGMENT = string(minLength=1, pattern="^[^/]+$")

PATH_PARAMETERS: dict[str, tuple[Schema, str]] = {
    "subscriptionId": (SEGMENT, "The subscription id."),
    "resourceGroupName": (SEGMENT, "The resource group."),
    "vmScaleSetName": (SEGMENT, "The scale set."),
    "instanceId": (SEGMENT, "The instance id (digits)."),
    "vmssExtensionName": (SEGMENT, "The extension's name."),
    "location": (SEGMENT, "A region name, like eastus."),
    "operationId": (SEGMENT, "The operation's id, from Azure-AsyncOperation or Location."),
    "publisherName": (SEGMENT, "An image publisher."),
    "offer": (SEGMENT, "An image offer."),
    "skus": (SEGMENT, "An image SKU."),
    "version": (SEGMENT, "An image version."),
    "galleryName": (SEGMENT, "A gallery."),
    "galleryImageName": (SEGMENT, "A gallery image definition."),
    "galleryImageVersionName": (SEGMENT, "A gallery image version (Major.Minor.Patch)."),
    "target": (
        string(minLength=1),
        "An image key (platform:publisher/offer/sku:version, gallery:gallery/image:version, custom:uri) or an "
        "extension key (publisher.type@version); may hold '/'.",
    ),
    "runId": (SEGMENT, "An upgrade run's id."),
}


def _parameters() -> dict[str, Schema]:
    parameters: dict[str, Schema] = {
        name: {"name": name, "in": "path", "required": True, "description": text, "schema": schema}
        for name, (schema, text) in PATH_PARAMETERS.items()
    }
    parameters["ApiVersion"] = {
        "name": "api-version",
        "in": "query",
        "required": True,
        "description": "YYYY-MM-DD[-preview], 2018-10-01 or later (400 MissingApiVersionParameter without it).",
        "schema": string(example=API_VERSION),
    }
    parameters["SkipToken"] = {
        "name": "$skiptoken",
        "in": "query",
        "required": False,
        "description": "Where the page starts; take it from nextLink, never build it.",
        "schema": string(),
    }
    return parameters


def param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _header(schema: Schema, description: str) -> Schema:
    return {"description": description, "schema": schema}


def _error_response(description: str, headers: dict[str, Schema] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": ref("ErrorResponse")}}}
    if headers:
        response["headers"] = headers
    return response


ERROR_RESPONSES: dict[str, tuple[str, Schema]] = {
    "400": (
        "BadRequest",
        _error_response(
            "MissingApiVersionParameter, InvalidApiVersionParameter, InvalidRequestContent, InvalidParameter "
            "(target: the property at fault; several: details)."
        ),
    ),
    "401": (
        "Unauthorized",
        _error_response(
            "AuthenticationFailed: no, unknown, revoked or malformed token.",
            {"WWW-Authenticate": _header(string(), 'Bearer realm="vmss-console"')},
        ),
    ),
    "403": ("Forbidden", _error_response("AuthorizationFailed: the caller's role does not allow it.")),
    "404": ("NotFound", _error_response("ResourceNotFound (or the resource type's own code), InvalidResourceType.")),
    "405": (
        "MethodNotAllowed",
        _error_response("MethodNotAllowed: the path has no such method.", {"Allow": _header(string(), "The methods")}),
    ),
    "409": ("Conflict", _error_response("The resource's state forbids it now (OperationNotAllowed, Conflict, …).")),
    "413": ("PayloadTooLarge", _error_response("RequestEntityTooLarge.")),
    "429": (
        "TooManyRequests",
        _error_response(
            "TooManyRequests: too many failed token attempts from this address.",
            {"Retry-After": _header(integer(), "Seconds until the window ends")},
        ),
    ),
}
ALWAYS = ("400", "401", "403", "405", "429")  # every ARM endpoint: api-version, auth, role, method, limit
# An operation extension: true on a POST that is a read (the viewers role may call it), as a
# plan preview is; GET is always a read, PUT, PATCH, DELETE and other POSTs are writes.
READ_ONLY = "x-read-only"


def _responses() -> dict[str, Schema]:
    responses = {name: response for name, response in ERROR_RESPONSES.values()}
    responses["Accepted"] = {
        "description": "Accepted: a long-running operation; poll Azure-AsyncOperation (or Location).",
        "headers": {
            "Azure-AsyncOperation": _header(string(fmt="uri"), "The operation-status resource"),
            "Location": _header(string(fmt="uri"), "The operation's monitor (202 until done)"),
            "Retry-After": _header(integer(), "Seconds between polls"),
        },
    }
    return responses


def json_response(schema: Schema, description: str = "OK") -> Schema:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def empty(description: str) -> Schema:
    return {"description": description}


def accepted() -> Schema:
    return {"$ref": "#/components/responses/Accepted"}


def errors(*statuses: str) -> dict[str, Schema]:
    return {status: {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"} for status in statuses}


def json_body(schema: Schema, *, required: bool = True, example: Any = None) -> Schema:
    content: Schema = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"required": required, "content": {JSON: content}}


def operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    tag: str,
    extra_errors: tuple[str, ...] = (),
    parameters: tuple[Schema, ...] = (),
    body: Schema | None = None,
    description: str | None = None,
    read_only: bool = False,
) -> Schema:
    """One ARM endpoint: api-version, bearer auth and the errors every endpoint can answer.
    `read_only`: a POST that writes nothing, so viewers may call it (READ_ONLY marks it)."""
    result: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "parameters": [param("ApiVersion"), *parameters],
        "responses": {**responses, **errors(*sorted({*ALWAYS, *extra_errors}))},
    }
    if description:
        result["description"] = description
    if read_only:
        result[READ_ONLY] = True
    if body is not None:
        result["requestBody"] = body
    return result


def path_item(*names: str, **methods: Schema) -> Schema:
    return {"parameters": [param(name) for name in names], **methods}


# --- paths -----------------------------------------------------------------------------------------

SUBSCRIPTION = "/subscriptions/{subscriptionId}"
GROUP = f"{SUBSCRIPTION}/resourceGroups/{{resourceGroupName}}"
SCALE_SETS = "providers/Microsoft.Compute/virtualMachineScaleSets"
SCALE_SET = f"{GROUP}/{SCALE_SETS}/{{vmScaleSetName}}"
SET_PARAMS = ("subscriptionId", "resourceGroupName", "vmScaleSetName")
LOCATION = f"{SUBSCRIPTION}/providers/Microsoft.Compute/locations/{{location}}"
OFFERS = f"{LOCATION}/publishers/{{publisherName}}/artifacttypes/vmimage/offers"
VERSIONS = f"{OFFERS}/{{offer}}/skus/{{skus}}/versions"
GALLERY_VERSIONS = f"{GROUP}/providers/Microsoft.Compute/galleries/{{galleryName}}/images/{{galleryImageName}}/versions"
CONSOLE = "/console/api"
CONSOLE_SET = (
    f"{CONSOLE}/subscriptions/{{subscriptionId}}/resourceGroups/{{resourceGroupName}}/"
    "virtualMachineScaleSets/{vmScaleSetName}"
)

INSTANCE_IDS_EXAMPLE = {"instanceIds": ["0"]}
SCALE_SET_EXAMPLE = {
    "location": "eastus",
    "sku": {"name": "Standard_D2s_v3", "capacity": 2},
    "properties": {
        "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 20}},
        "virtualMachineProfile": {
            "storageProfile": {
                "imageReference": {
                    "publisher": "Canonical",
                    "offer": "UbuntuServer",
                    "sku": "18.04-LTS",
                    "version": "latest",
                }
            }
        },
    },
}
PLAN_EXAMPLE = {"action": "osRollingUpgrade", "failureShare": 0.25}
EXTENSION_EXAMPLE = {
    "properties": {
        "publisher": "Microsoft.ManagedServices",
        "type": "ApplicationHealthLinux",
        "typeHandlerVersion": "2.0",
        "enableAutomaticUpgrade": True,
        "settings": {"protocol": "tcp", "port": 8080},
    }
}


def _scale_set_paths() -> dict[str, Schema]:
    tag = "VirtualMachineScaleSets"
    scale_set = json_response(ref("VirtualMachineScaleSet"))
    sets_page = json_response(list_envelope(ref("VirtualMachineScaleSet"), paged=True))
    update = json_body(ref("VirtualMachineScaleSetUpdate"), example=SCALE_SET_EXAMPLE)
    return {
        "/subscriptions": {
            "get": operation(
                "Subscriptions_List",
                "The subscriptions that hold scale sets",
                {"200": json_response(list_envelope(ref("Subscription"), paged=False))},
                tag="Subscriptions",
            )
        },
        f"{SUBSCRIPTION}/{SCALE_SETS}": path_item(
            "subscriptionId",
            get=operation(
                "VirtualMachineScaleSets_ListAll",
                "Scale sets in a subscription",
                {"200": sets_page},
                tag=tag,
                parameters=(param("SkipToken"),),
            ),
        ),
        f"{GROUP}/{SCALE_SETS}": path_item(
            "subscriptionId",
            "resourceGroupName",
            get=operation(
                "VirtualMachineScaleSets_List",
                "Scale sets in a resource group",
                {"200": sets_page},
                tag=tag,
                parameters=(param("SkipToken"),),
            ),
        ),
        SCALE_SET: path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSets_Get", "A scale set", {"200": scale_set}, tag=tag, extra_errors=("404",)
            ),
            put=operation(
                "VirtualMachineScaleSets_CreateOrUpdate",
                "Create (201) or update (200) a scale set",
                {"200": scale_set, "201": json_response(ref("VirtualMachineScaleSet"), "Created")},
                tag=tag,
                body=update,
                extra_errors=("404", "409", "413"),
                description="404 names a gallery image that does not exist; 409 when the set's state forbids it.",
            ),
            patch=operation(
                "VirtualMachineScaleSets_Update",
                "Update what the body names",
                {"200": scale_set},
                tag=tag,
                body=update,
                extra_errors=("404", "409", "413"),
            ),
            delete=operation(
                "VirtualMachineScaleSets_Delete",
                "Delete a scale set (refused with 409 while a run rolls forward)",
                {"200": empty("Deleted"), "204": empty("There was no such set")},
                tag=tag,
                extra_errors=("409",),
            ),
        ),
        f"{SCALE_SET}/instanceView": path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSets_GetInstanceView",
                "The set's instance view",
                {"200": json_response(ref("VirtualMachineScaleSetInstanceView"))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
    }


def _vm_paths() -> dict[str, Schema]:
    tag = "VirtualMachineScaleSetVMs"
    vm = (*SET_PARAMS, "instanceId")
    return {
        f"{SCALE_SET}/virtualMachines": path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSetVMs_List",
                "The set's instances",
                {"200": json_response(list_envelope(ref("VirtualMachineScaleSetVM"), paged=True))},
                tag=tag,
                parameters=(param("SkipToken"),),
                extra_errors=("404",),
            ),
        ),
        f"{SCALE_SET}/virtualMachines/{{instanceId}}": path_item(
            *vm,
            get=operation(
                "VirtualMachineScaleSetVMs_Get",
                "One instance",
                {"200": json_response(ref("VirtualMachineScaleSetVM"))},
                tag=tag,
                parameters=(query("$expand", string(enum=["instanceView"]), "instanceView embeds the instance view."),),
                extra_errors=("404",),
            ),
        ),
        f"{SCALE_SET}/virtualMachines/{{instanceId}}/instanceView": path_item(
            *vm,
            get=operation(
                "VirtualMachineScaleSetVMs_GetInstanceView",
                "One instance's instance view",
                {"200": json_response(ref("VirtualMachineScaleSetVMInstanceView"))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
    }


def _upgrade_paths() -> dict[str, Schema]:
    tag = "VirtualMachineScaleSetRollingUpgrades"
    return {
        f"{SCALE_SET}/rollingUpgrades/latest": path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSetRollingUpgrades_GetLatest",
                "The latest rolling upgrade (404 NotFound when none ran)",
                {"200": json_response(ref("RollingUpgradeStatusInfo"))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
        f"{SCALE_SET}/osUpgradeHistory": path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSets_GetOSUpgradeHistory",
                "The last five OS upgrades of the past two months, newest first (R-HIST-1)",
                {"200": json_response(list_envelope(ref("UpgradeOperationHistoricalStatusInfo"), paged=False))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
    }


def _extension_paths() -> dict[str, Schema]:
    tag = "VirtualMachineScaleSetExtensions"
    extension = json_response(ref("VirtualMachineScaleSetExtension"))
    return {
        f"{SCALE_SET}/extensions": path_item(
            *SET_PARAMS,
            get=operation(
                "VirtualMachineScaleSetExtensions_List",
                "The set's extensions",
                {"200": json_response(list_envelope(ref("VirtualMachineScaleSetExtension"), paged=False))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
        f"{SCALE_SET}/extensions/{{vmssExtensionName}}": path_item(
            *SET_PARAMS,
            "vmssExtensionName",
            get=operation(
                "VirtualMachineScaleSetExtensions_Get",
                "One extension",
                {"200": extension},
                tag=tag,
                extra_errors=("404",),
            ),
            put=operation(
                "VirtualMachineScaleSetExtensions_CreateOrUpdate",
                "Add (201) or change (200) an extension of the set's model",
                {"200": extension, "201": json_response(ref("VirtualMachineScaleSetExtension"), "Created")},
                tag=tag,
                body=json_body(ref("VirtualMachineScaleSetExtensionInput"), example=EXTENSION_EXAMPLE),
                extra_errors=("404", "409", "413"),
                description=(
                    "enableAutomaticUpgrade and autoUpgradeMinorVersion are upgrade settings; any other change "
                    "is a model change (R-MODE-1)."
                ),
            ),
            delete=operation(
                "VirtualMachineScaleSetExtensions_Delete",
                "Remove an extension",
                {"200": empty("Removed"), "204": empty("There was no such extension")},
                tag=tag,
                extra_errors=("404", "409"),
            ),
        ),
    }


ACTIONS: list[tuple[str, str, str, bool]] = [
    # (path under the set, operationId, summary, takes VirtualMachineScaleSetVMInstanceIDs)
    (
        "osRollingUpgrade",
        "VirtualMachineScaleSetRollingUpgrades_StartOSUpgrade",
        "Start an OS rolling upgrade to the latest image, now (no automatic rollback, R-ROLLBACK-1)",
        False,
    ),
    (
        "extensionRollingUpgrade",
        "VirtualMachineScaleSetRollingUpgrades_StartExtensionUpgrade",
        "Upgrade opted-in extensions to their newest minor release, under the rolling policy (R-EXT-1)",
        False,
    ),
    (
        "rollingUpgrades/cancel",
        "VirtualMachineScaleSetRollingUpgrades_Cancel",
        "Cancel the rolling upgrade (the batch in flight finishes; 409 when none runs)",
        False,
    ),
    (
        "manualupgrade",
        "VirtualMachineScaleSets_UpdateInstances",
        "Bring the named instances to the latest model, at once (instanceIds required)",
        True,
    ),
    ("reimage", "VirtualMachineScaleSets_Reimage", "Reimage instances (all when none are named)", True),
    ("start", "VirtualMachineScaleSets_Start", "Start instances (all when none are named)", True),
    ("restart", "VirtualMachineScaleSets_Restart", "Restart instances (all when none are named)", True),
    ("poweroff", "VirtualMachineScaleSets_PowerOff", "Power off instances (all when none are named)", True),
    ("deallocate", "VirtualMachineScaleSets_Deallocate", "Deallocate instances (all when none are named)", True),
]


def _action_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {}
    for suffix, operation_id, summary, takes_instances in ACTIONS:
        body = (
            json_body(ref("VirtualMachineScaleSetVMInstanceIDs"), required=False, example=INSTANCE_IDS_EXAMPLE)
            if takes_instances
            else None
        )
        tag = operation_id.split("_")[0]
        paths[f"{SCALE_SET}/{suffix}"] = path_item(
            *SET_PARAMS,
            post=operation(
                operation_id,
                summary,
                {"202": accepted()},
                tag=tag,
                body=body,
                extra_errors=("404", "409", "413") if takes_instances else ("404", "409"),
                description="A long-running operation: 202 with Azure-AsyncOperation, Location and Retry-After.",
            ),
        )
    paths[f"{LOCATION}/operations/{{operationId}}"] = path_item(
        "subscriptionId",
        "location",
        "operationId",
        get=operation(
            "Operations_Get",
            "A long-running operation's status",
            {
                "200": {
                    "description": (
                        "The operation-status resource; with monitor=true, an empty body once it succeeded."
                    ),
                    "content": {JSON: {"schema": ref("OperationStatus")}, "text/html": {"schema": string(maxLength=0)}},
                },
                "202": {
                    "description": "monitor=true: still in progress (Azure-AsyncOperation, Location, Retry-After).",
                    "headers": _responses()["Accepted"]["headers"],
                },
            },
            tag="Operations",
            parameters=(query("monitor", boolean(), "true: answer as the Location (monitor) URL: 202 until done."),),
            extra_errors=("404", "409"),
            description="409 with monitor=true: the operation failed or was canceled (its error).",
        ),
    )
    return paths


def _catalog_paths() -> dict[str, Schema]:
    tag = "VirtualMachineImages"
    entries = json_response(array(ref("CatalogEntry")), "A bare array, as az vm image list reads it")
    location = ("subscriptionId", "location")
    return {
        f"{LOCATION}/publishers": path_item(
            *location,
            get=operation(
                "VirtualMachineImages_ListPublishers",
                "Image publishers in a location",
                {"200": entries},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
        OFFERS: path_item(
            *location,
            "publisherName",
            get=operation(
                "VirtualMachineImages_ListOffers",
                "A publisher's offers",
                {"200": entries},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
        f"{OFFERS}/{{offer}}/skus": path_item(
            *location,
            "publisherName",
            "offer",
            get=operation(
                "VirtualMachineImages_ListSkus", "An offer's SKUs", {"200": entries}, tag=tag, extra_errors=("404",)
            ),
        ),
        VERSIONS: path_item(
            *location,
            "publisherName",
            "offer",
            "skus",
            get=operation(
                "VirtualMachineImages_List",
                "A SKU's published versions, in version order",
                {"200": entries},
                tag=tag,
                parameters=(
                    query("$top", integer(minimum=1, maximum=100_000), "Keep the first N."),
                    query("$orderby", string(enum=["name", "name asc", "name desc"]), "name desc reverses."),
                ),
                extra_errors=("404",),
            ),
        ),
        f"{VERSIONS}/{{version}}": path_item(
            *location,
            "publisherName",
            "offer",
            "skus",
            "version",
            get=operation(
                "VirtualMachineImages_Get",
                "One published image version",
                {"200": json_response(ref("VirtualMachineImage"))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
    }


def _gallery_paths() -> dict[str, Schema]:
    tag = "GalleryImageVersions"
    image = ("subscriptionId", "resourceGroupName", "galleryName", "galleryImageName")
    version = json_response(ref("GalleryImageVersion"))
    return {
        GALLERY_VERSIONS: path_item(
            *image,
            get=operation(
                "GalleryImageVersions_ListByGalleryImage",
                "An image definition's versions",
                {"200": json_response(list_envelope(ref("GalleryImageVersion"), paged=True))},
                tag=tag,
                parameters=(param("SkipToken"),),
                extra_errors=("404",),
            ),
        ),
        f"{GALLERY_VERSIONS}/{{galleryImageVersionName}}": path_item(
            *image,
            "galleryImageVersionName",
            get=operation(
                "GalleryImageVersions_Get", "A gallery image version", {"200": version}, tag=tag, extra_errors=("404",)
            ),
            put=operation(
                "GalleryImageVersions_CreateOrUpdate",
                "Publish a gallery image version (201); repeat it unchanged (200)",
                {"200": version, "201": json_response(ref("GalleryImageVersion"), "Created")},
                tag=tag,
                body=json_body(
                    ref("GalleryImageVersionInput"),
                    example={
                        "location": "eastus",
                        "properties": {"publishingProfile": {"targetRegions": [{"name": "eastus"}]}},
                    },
                ),
                extra_errors=("404", "409", "413"),
            ),
        ),
    }


def _console_paths() -> dict[str, Schema]:
    tag = "Console"
    knobs = {"neverHealthyShare": 0.1, "provisioningFailureShare": 0, "bootSeconds": 30}
    published = {"200": "It existed (new locations added)", "201": "Created"}
    return {
        f"{CONSOLE}/platformImageVersions": {
            "post": operation(
                "Console_PublishPlatformImageVersion",
                "Publish a platform image version in locations, with its fault knobs if given",
                {code: json_response(ref("PlatformImageVersion"), text) for code, text in published.items()},
                tag=tag,
                body=json_body(
                    ref("PlatformImageVersionInput"),
                    example={
                        "publisher": "Canonical",
                        "offer": "UbuntuServer",
                        "sku": "18.04-LTS",
                        "version": "18.04.202501010",
                        "locations": ["eastus"],
                        "faults": knobs,
                    },
                ),
                extra_errors=("413",),
            )
        },
        f"{CONSOLE}/extensionVersions": {
            "post": operation(
                "Console_PublishExtensionVersion",
                "Release an extension version (R-EXT-1), with its fault knobs if given",
                {code: json_response(ref("ExtensionVersion"), text) for code, text in published.items()},
                tag=tag,
                body=json_body(
                    ref("ExtensionVersionInput"),
                    example={
                        "publisher": "Microsoft.ManagedServices",
                        "type": "ApplicationHealthLinux",
                        "version": "2.1",
                        "faults": knobs,
                    },
                ),
                extra_errors=("413",),
            )
        },
        f"{CONSOLE}/faultProfiles/{{target}}": path_item(
            "target",
            get=operation(
                "Console_GetFaultProfile",
                "A version's fault knobs",
                {"200": json_response(ref("FaultProfile"))},
                tag=tag,
                extra_errors=("404",),
            ),
            put=operation(
                "Console_PutFaultProfile",
                "Replace a version's fault knobs (201 created, 200 replaced)",
                {"200": json_response(ref("FaultProfile")), "201": json_response(ref("FaultProfile"), "Created")},
                tag=tag,
                body=json_body(ref("FaultKnobs"), example=knobs),
                extra_errors=("404", "413"),
                description=(
                    "400 when the target is neither an image key nor an extension key; 404 InvalidResourceType "
                    "when it holds a line break (no route takes such a path, as for GET)."
                ),
            ),
        ),
        f"{CONSOLE}/runs/{{runId}}": path_item(
            "runId",
            get=operation(
                "Console_GetRun",
                "An upgrade run with its batches",
                {"200": json_response(ref("UpgradeRunDetail"))},
                tag=tag,
                extra_errors=("404",),
            ),
        ),
        f"{CONSOLE}/runs/{{runId}}/events": path_item(
            "runId",
            get=operation(
                "Console_ListRunEvents",
                "A run's event log, oldest first",
                {"200": json_response(list_envelope(ref("RunEvent"), paged=True))},
                tag=tag,
                parameters=(param("SkipToken"),),
                extra_errors=("404",),
            ),
        ),
        f"{CONSOLE_SET}/maintenance": path_item(
            *SET_PARAMS,
            post=operation(
                "Console_SetMaintenance",
                "Start or end maintenance on instances (the simulator makes them unhealthy meanwhile)",
                {"200": json_response(ref("Maintenance"))},
                tag=tag,
                body=json_body(ref("MaintenanceInput"), example={"instanceIds": ["0"], "on": True}),
                extra_errors=("404", "413"),
            ),
        ),
        f"{CONSOLE_SET}/plan": path_item(
            *SET_PARAMS,
            post=operation(
                "Console_PlanUpgrade",
                "The plan preview (dry run) of an upgrade action and its what-if; changes nothing",
                {"200": json_response(ref("UpgradePlan"))},
                tag=tag,
                body=json_body(ref("UpgradePlanInput"), example=PLAN_EXAMPLE),
                extra_errors=("404", "409", "413"),
                read_only=True,
                description=(
                    "A read: viewers may call it. The batches are those the action would write, computed by the "
                    "same code. The refusals are the action's own: 409 OperationNotAllowed while a run rolls "
                    "forward on the set (R-ONE-1) or when nothing is to be upgraded; 400 InvalidParameter or "
                    "InvalidRequestContent for bad input."
                ),
            ),
        ),
        f"{CONSOLE_SET}/runs": path_item(
            *SET_PARAMS,
            get=operation(
                "Console_ListScaleSetRuns",
                "A scale set's upgrade runs, newest first",
                {"200": json_response(list_envelope(ref("UpgradeRun"), paged=True))},
                tag=tag,
                parameters=(param("SkipToken"),),
                extra_errors=("404",),
            ),
        ),
    }


def _openapi_path() -> dict[str, Schema]:
    return {
        f"{CONSOLE}/openapi.json": {
            "get": {
                "operationId": "Console_GetOpenApi",
                "summary": "This description (no api-version)",
                "tags": ["Console"],
                "responses": {"200": json_response(ref("OpenApiDocument")), **errors("401", "403", "429")},
            }
        }
    }


INFO_DESCRIPTION = """\
An ARM-compatible subset of Microsoft.Compute (scale sets, their instances, rolling upgrades,
extensions, the image catalog and gallery image versions) and the console's own API under
/console/api (publishing versions, the simulator's fault knobs, maintenance, runs, plan previews).

Every request needs `?api-version=` (2018-10-01 or later) and `Authorization: Bearer <token>`
(make one on /api-tokens/; a logged-in page may use its session cookie and CSRF token instead).
Reading (GET, and a POST marked `x-read-only: true`) needs the viewers, operators or staff role;
writing, operators or staff.
Errors are `{"error": {"code", "message", "target"?, "details"?}}`. Actions are long-running
operations: 202 with Azure-AsyncOperation, Location and Retry-After. Lists are
`{"value": [...], "nextLink"?}`, except the image catalog's bare arrays."""


def description() -> dict[str, object]:
    """The whole API as an OpenAPI 3.0 document (a fresh copy: callers may change it freely)."""
    document: dict[str, object] = {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "VMSS Upgrade Console API", "version": API_VERSION, "description": INFO_DESCRIPTION},
        "servers": [{"url": "/", "description": "The host this description was fetched from"}],
        "security": [{BEARER: []}],
        "paths": {
            **_scale_set_paths(),
            **_vm_paths(),
            **_upgrade_paths(),
            **_extension_paths(),
            **_action_paths(),
            **_catalog_paths(),
            **_gallery_paths(),
            **_console_paths(),
            **_openapi_path(),
        },
        "components": {
            "securitySchemes": {
                BEARER: {"type": "http", "scheme": "bearer", "description": "An API token: vmss_<prefix>_<secret>"}
            },
            "parameters": _parameters(),
            "responses": _responses(),
            "schemas": schemas(),
        },
    }
    return copy.deepcopy(document)  # module constants (parameters, examples) are shared between calls


@require_GET
@login_not_required
@csrf_exempt
def openapi_view(request: HttpRequest) -> HttpResponse:
    """Like every page, the description needs a login: a bearer token or a page session, any
    console role. No api-version: it describes them all."""
    try:
        arm.authorize(arm.authenticate(request), write=False)
    except arm.ArmError as error:
        return error.response()
    return JsonResponse(description())
