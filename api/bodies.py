"""ARM request bodies read into service arguments (SPEC 7): the scale set of a PUT or PATCH,
and an extension of PUT …/extensions/{name}.

Reading checks each value's JSON type and names the offending property by its path
(`properties.upgradePolicy.mode`) in a 400 InvalidParameter; what the values mean is then
checked by the model's own validation, in the services. Properties ARM returns but a client
cannot set (provisioningState, uniqueId, timeCreated, …) and properties the console does not
model (networkInterfaceConfigurations, osProfile.adminUsername, …) are ignored, so a resource
read with GET can be sent back with PUT as it is.

Beyond ARM, `properties.driver` names what the set's instances are (SPEC 8): "simulator", the
default, or "local", each instance a real process on this machine. It is fixed when the set is
made, as platformFaultDomainCount is: a driver cannot take over instances another one made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from api.arm import FIELD_PATHS, ArmError
from fleet.models import (
    DriverName,
    GalleryImage,
    ImageSource,
    OsType,
    ProbeProtocol,
    Region,
    ScaleSet,
    UpgradeMode,
)
from fleet.versions import LATEST
from upgrades.services import MODEL_FIELDS, SETTINGS_FIELDS

RUP = ("properties", "upgradePolicy", "rollingUpgradePolicy")
AUTO = ("properties", "upgradePolicy", "automaticOSUpgradePolicy")
PROFILE = ("properties", "virtualMachineProfile")

# (path in the ARM body, ScaleSet field, JSON type): the plain one-to-one properties.
PLAIN: list[tuple[tuple[str, ...], str, type]] = [
    (("sku", "name"), "vm_size", str),
    ((*RUP, "maxBatchInstancePercent"), "max_batch_instance_percent", int),
    ((*RUP, "maxUnhealthyInstancePercent"), "max_unhealthy_instance_percent", int),
    ((*RUP, "maxUnhealthyUpgradedInstancePercent"), "max_unhealthy_upgraded_instance_percent", int),
    ((*RUP, "pauseTimeBetweenBatches"), "pause_time_between_batches", str),
    ((*RUP, "enableCrossZoneUpgrade"), "enable_cross_zone_upgrade", bool),
    ((*RUP, "prioritizeUnhealthyInstances"), "prioritize_unhealthy_instances", bool),
    ((*RUP, "rollbackFailedInstancesOnPolicyBreach"), "rollback_failed_instances_on_policy_breach", bool),
    ((*RUP, "maxSurge"), "max_surge", bool),
    ((*AUTO, "enableAutomaticOSUpgrade"), "enable_automatic_os_upgrade", bool),
    ((*AUTO, "disableAutomaticRollback"), "disable_automatic_rollback", bool),
    ((*AUTO, "useRollingUpgradePolicy"), "use_rolling_upgrade_policy", bool),
    ((*AUTO, "osRollingUpgradeDeferral"), "os_rolling_upgrade_deferral", bool),
    ((*PROFILE, "osProfile", "windowsConfiguration", "enableAutomaticUpdates"), "enable_automatic_updates", bool),
    (("properties", "singlePlacementGroup"), "single_placement_group", bool),
    (("properties", "platformFaultDomainCount"), "platform_fault_domain_count", int),
    ((*PROFILE, "storageProfile", "osDisk", "osType"), "os_type", str),
    (("properties", "driver"), "driver", str),
]
_IMAGE = "properties.virtualMachineProfile.storageProfile.imageReference"
_PROBE = "properties.virtualMachineProfile.networkProfile.healthProbe.id"
FIELD_PATHS.update(
    {name: ".".join(path) for path, name, _ in PLAIN}
    | {
        "upgrade_mode": "properties.upgradePolicy.mode",
        "capacity": "sku.capacity",
        "zones": "zones",
        "region": "location",
        "image_publisher": f"{_IMAGE}.publisher",
        "image_offer": f"{_IMAGE}.offer",
        "image_sku": f"{_IMAGE}.sku",
        "image_version": f"{_IMAGE}.version",
        "gallery_image": f"{_IMAGE}.id",
        "custom_image_uri": f"{_IMAGE}.id",
        "health_probe_protocol": _PROBE,
        "health_probe_port": _PROBE,
        "health_probe_path": _PROBE,
        "health_probe_interval_seconds": _PROBE,
        "extensions": "properties.virtualMachineProfile.extensionProfile.extensions",
        "provision_after_extensions": "properties.provisionAfterExtensions",
    }
)

# Fixed when a set is made: changing them would move every instance, or (the driver) leave its
# instances with a driver that did not make them.
CREATE_ONLY = {"platform_fault_domain_count", "os_type", "zones", "driver"}
MAX_INT = 2**31 - 1
_GALLERY_IMAGE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/galleries/"
    r"(?P<gallery>[^/]+)/images/(?P<image>[^/]+)(?:/versions/(?P<version>[^/]+))?$",
    re.IGNORECASE,
)
_PROBE_ID = re.compile(r"/probes/(?P<protocol>tcp|http|https)-(?P<port>\d{1,5})$", re.IGNORECASE)


def invalid(path: str, message: str) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=path)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _get(body: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    """(present, value) of a nested property; an object expected on the way but not found is
    a 400 naming it."""
    node: Any = body
    for depth, key in enumerate(path):
        if not isinstance(node, dict):
            raise invalid(_dotted(path[:depth]), f"'{_dotted(path[:depth])}' must be a JSON object.")
        if key not in node or node[key] is None:
            return False, None
        node = node[key]
    return True, node


def _typed(value: Any, kind: type, path: str) -> Any:
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(path, f"'{path}' must be a whole number.")
        if not 0 <= value <= MAX_INT:
            raise invalid(path, f"'{path}' is out of range.")
    elif kind is bool and not isinstance(value, bool):
        raise invalid(path, f"'{path}' must be true or false.")
    elif kind is str and not isinstance(value, str):
        raise invalid(path, f"'{path}' must be a string.")
    return value


def _choice(value: str, choices: list[str], path: str) -> str:
    """ARM enums match case-insensitively; the stored spelling is the canonical one."""
    for choice in choices:
        if choice.lower() == value.lower():
            return choice
    raise invalid(path, f"'{value}' is not a valid {path}: one of {', '.join(choices)}.")


@dataclass
class ScaleSetBody:
    """What a PUT or PATCH body asks for, as service arguments."""

    fields: dict[str, Any] = field(default_factory=dict)
    region: Region | None = None
    capacity: int | None = None
    extensions: list[dict[str, Any]] | None = None

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.fields.items() if k in SETTINGS_FIELDS}

    def model(self) -> dict[str, Any]:
        return {k: v for k, v in self.fields.items() if k in MODEL_FIELDS}


def scale_set_body(body: Any, *, existing: ScaleSet | None) -> ScaleSetBody:
    """Read a VirtualMachineScaleSet body. `existing` is the set a PUT or PATCH updates."""
    if not isinstance(body, dict):
        raise ArmError(
            400, "InvalidRequestContent", "The request body must be a JSON object (a scale set).", target="$"
        )
    result = ScaleSetBody()
    _location(body, result, existing)
    for path, name, kind in PLAIN:
        present, value = _get(body, path)
        if present:
            result.fields[name] = _typed(value, kind, _dotted(path))
    _enums(body, result)
    present, capacity = _get(body, ("sku", "capacity"))
    if present:
        result.capacity = _typed(capacity, int, "sku.capacity")
    present, zones = _get(body, ("zones",))
    if present:
        if not isinstance(zones, list) or not all(isinstance(z, str) for z in zones):
            raise invalid("zones", 'zones must be a list of zone names, like ["1", "2"].')
        result.fields["zones"] = zones
    _image(body, result, existing)
    _probe(body, result, existing)
    present, extensions = _get(body, (*PROFILE, "extensionProfile", "extensions"))
    if present:
        where = "properties.virtualMachineProfile.extensionProfile.extensions"
        if not isinstance(extensions, list):
            raise invalid(where, f"'{where}' must be a list.")
        result.extensions = [extension_body(e, path=f"{where}[{i}]") for i, e in enumerate(extensions)]
    if existing is not None:
        _create_only_unchanged(result, existing)
    return result


def _location(body: dict[str, Any], result: ScaleSetBody, existing: ScaleSet | None) -> None:
    location = body.get("location")
    if location is None:
        if existing is None:
            raise invalid("location", "A new scale set needs a location (a region name, like eastus).")
        return
    if not isinstance(location, str):
        raise invalid("location", "'location' must be a string.")
    normalized = location.replace(" ", "").lower()
    if existing is not None:
        if normalized != existing.region.name.lower():
            raise ArmError(
                400,
                "PropertyChangeNotAllowed",
                f"Changing property 'location' is not allowed: the set is in {existing.region.name}.",
                target="location",
            )
        return
    result.region = Region.objects.filter(name__iexact=normalized).first()
    if result.region is None:
        known = ", ".join(Region.objects.order_by("name").values_list("name", flat=True)) or "none yet"
        raise ArmError(
            400,
            "LocationNotAvailableForResourceType",
            f"The location '{location}' is not available for resource type "
            f"'Microsoft.Compute/virtualMachineScaleSets'. Known locations: {known}.",
            target="location",
        )


def _enums(body: dict[str, Any], result: ScaleSetBody) -> None:
    path = ("properties", "upgradePolicy", "mode")
    present, mode = _get(body, path)
    if present:
        result.fields["upgrade_mode"] = _choice(
            _typed(mode, str, _dotted(path)), list(UpgradeMode.values), _dotted(path)
        )
    if "os_type" in result.fields:
        result.fields["os_type"] = _choice(result.fields["os_type"], list(OsType.values), "osDisk.osType")
    if "driver" in result.fields:
        result.fields["driver"] = _choice(result.fields["driver"], list(DriverName.values), "properties.driver")


def _image(body: dict[str, Any], result: ScaleSetBody, existing: ScaleSet | None) -> None:
    """imageReference: {publisher, offer, sku, version} for a platform image, {id} for a
    gallery image (…/images/{i}, or …/versions/{v} pinned) or, any other id, a custom image."""
    path = (*PROFILE, "storageProfile", "imageReference")
    present, reference = _get(body, path)
    dotted = _dotted(path)
    if not present:
        if existing is None:
            raise invalid(dotted, "A new scale set needs an image: storageProfile.imageReference.")
        return
    if not isinstance(reference, dict):
        raise invalid(dotted, f"'{dotted}' must be a JSON object.")
    image_id = reference.get("id")
    if image_id is not None:
        _image_by_id(_typed(image_id, str, f"{dotted}.id"), result, f"{dotted}.id")
        return
    values = {}
    for key in ("publisher", "offer", "sku", "version"):
        value = reference.get(key)
        if value is None and key != "version":
            raise invalid(f"{dotted}.{key}", f"A platform image needs {dotted}.{key}.")
        values[key] = _typed(value if value is not None else LATEST, str, f"{dotted}.{key}")
    result.fields.update(
        image_source=ImageSource.PLATFORM,
        image_publisher=values["publisher"],
        image_offer=values["offer"],
        image_sku=values["sku"],
        image_version=values["version"].lower() if values["version"].lower() == LATEST else values["version"],
    )


def _image_by_id(image_id: str, result: ScaleSetBody, path: str) -> None:
    match = _GALLERY_IMAGE_ID.match(image_id)
    if match is None:
        result.fields.update(image_source=ImageSource.CUSTOM, custom_image_uri=image_id)
        return
    image = (
        GalleryImage.objects.select_related("gallery")
        .filter(
            gallery__subscription_id__iexact=match["sub"],
            gallery__resource_group__iexact=match["rg"],
            gallery__name__iexact=match["gallery"],
            name__iexact=match["image"],
        )
        .first()
    )
    if image is None:
        raise ArmError(404, "GalleryImageNotFound", f"The gallery image '{image_id}' was not found.", target=path)
    result.fields.update(
        image_source=ImageSource.GALLERY, gallery_image=image, image_version=match["version"] or LATEST
    )


def _probe(body: dict[str, Any], result: ScaleSetBody, existing: ScaleSet | None) -> None:
    """networkProfile.healthProbe.id: the console keeps the probe's settings on the set and
    names it '…/loadBalancers/{set}-lb/probes/{protocol}-{port}' (api.shapes). The id read
    back keeps the probe; another id of that form sets protocol and port."""
    from api.shapes import health_probe_id

    network = (*PROFILE, "networkProfile")
    present, probe = _get(body, (*network, "healthProbe"))
    if not present:
        return  # absent keeps the probe (a client may not send what it does not model)
    path = f"{_dotted(network)}.healthProbe.id"
    probe_id = probe.get("id") if isinstance(probe, dict) else None
    if not isinstance(probe_id, str):
        raise invalid(path, f"'{path}' must be the probe's resource id.")
    if existing is not None and existing.has_health_probe and probe_id.lower() == health_probe_id(existing).lower():
        return
    match = _PROBE_ID.search(probe_id)
    if match is None:
        raise invalid(
            path, "Name the probe '…/probes/{tcp|http|https}-{port}': the console keeps probe settings itself."
        )
    protocol = _choice(match["protocol"], list(ProbeProtocol.values), path)
    keep_path = existing.health_probe_path if existing is not None and existing.health_probe_path else "/health"
    result.fields.update(
        health_probe_protocol=protocol,
        health_probe_port=int(match["port"]),
        health_probe_path="" if protocol == ProbeProtocol.TCP else keep_path,
    )


def _create_only_unchanged(result: ScaleSetBody, existing: ScaleSet) -> None:
    for name in sorted(CREATE_ONLY & set(result.fields)):
        if result.fields[name] != getattr(existing, name):
            target = next((_dotted(p) for p, n, _ in PLAIN if n == name), name)
            raise ArmError(
                400,
                "PropertyChangeNotAllowed",
                f"Changing property '{target}' is not allowed after the scale set is created.",
                target=target,
            )
        del result.fields[name]


# --- extensions ------------------------------------------------------------------------------------

EXTENSION_PROPERTIES: list[tuple[str, str, type]] = [
    ("publisher", "publisher", str),
    ("type", "type", str),
    ("typeHandlerVersion", "type_handler_version", str),
    ("autoUpgradeMinorVersion", "auto_upgrade_minor_version", bool),
    ("enableAutomaticUpgrade", "enable_automatic_upgrade", bool),
    ("provisionAfterExtensions", "provision_after_extensions", list),
    ("settings", "settings", dict),
    ("protectedSettings", "protected_settings", dict),
]
_EXTENSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def extension_body(body: Any, *, path: str = "", name: str | None = None) -> dict[str, Any]:
    """A VirtualMachineScaleSetExtension as ScaleSetExtension field values. `name` comes from
    the URL of PUT …/extensions/{name}; in a list it is the item's own `name`."""
    prefix = f"{path}." if path else ""
    if not isinstance(body, dict):
        raise invalid(path or "$", "An extension must be a JSON object.")
    if name is None:
        name = body.get("name")
        if not isinstance(name, str):
            raise invalid(f"{prefix}name", "An extension needs a name.")
    if not _EXTENSION_NAME.match(name):
        raise invalid(f"{prefix}name", f"'{name}' is not a valid extension name.")
    properties = body.get("properties")
    if not isinstance(properties, dict):
        raise invalid(f"{prefix}properties", "An extension needs its properties (publisher, type, typeHandlerVersion).")
    spec: dict[str, Any] = {"name": name}
    for key, field_name, kind in EXTENSION_PROPERTIES:
        value = properties.get(key)
        if value is None:
            continue
        where = f"{prefix}properties.{key}"
        if kind is list:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise invalid(where, f"'{where}' must be a list of extension names.")
        elif kind is dict:
            if not isinstance(value, dict):
                raise invalid(where, f"'{where}' must be a JSON object.")
        else:
            _typed(value, kind, where)
        spec[field_name] = value
    for required in ("publisher", "type", "type_handler_version"):
        if required not in spec:
            key = next(k for k, f, _ in EXTENSION_PROPERTIES if f == required)
            raise invalid(f"{prefix}properties.{key}", f"An extension needs properties.{key}.")
    return spec
