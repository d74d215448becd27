"""When a scale set may have automatic OS image upgrades turned on (R-AUTO-1).

`automatic_os_upgrade_problems` is pure: it takes the set, its extensions and whether its
platform image is a supported SKU, and returns one message per broken condition, each naming
what to change. `validate_automatic_os_upgrade` looks the SKU up (one query) and raises.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError

from fleet.health import health_source_of
from fleet.models import ImageSource, OsType, ScaleSet, ScaleSetExtension, ServiceFabricDurability
from fleet.selectors import is_supported_os_sku
from fleet.versions import LATEST, parse_version

SERVICE_FABRIC_MIN_VERSION = (1, 1)
CUSTOM_IMAGE_REFUSED = (
    "Automatic OS upgrades do not support custom image URIs; use a platform image or a Compute Gallery image."
)


def automatic_os_upgrade_problems(
    scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension], *, supported: bool
) -> list[str]:
    """Why automatic OS upgrades cannot be enabled on this set; empty when they can.

    `supported`: whether the set's platform image (publisher/offer/sku) is in the
    supported-SKU table; ignored for gallery and custom images.
    """
    problems = [*_image_problems(scale_set, supported=supported)]
    service_fabric = [e for e in extensions if e.is_service_fabric]
    # Service Fabric watches its own nodes' health: no probe or extension needed there.
    if not scale_set.service_fabric_durability and health_source_of(scale_set, extensions).kind == "":
        problems.append(
            "Automatic OS upgrades need a health source: add a load-balancer health probe "
            "or the Application Health extension."
        )
    if scale_set.os_type == OsType.WINDOWS and scale_set.enable_automatic_updates is not False:
        problems.append(
            "Windows automatic updates must be off with automatic OS upgrades: set enableAutomaticUpdates to false."
        )
    if scale_set.service_fabric_durability or service_fabric:
        problems.extend(_service_fabric_problems(scale_set, service_fabric))
    return problems


def validate_automatic_os_upgrade(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> None:
    """Raise a ValidationError on enable_automatic_os_upgrade with every R-AUTO-1 problem."""
    supported = scale_set.image_source == ImageSource.PLATFORM and is_supported_os_sku(
        publisher=scale_set.image_publisher, offer=scale_set.image_offer, sku=scale_set.image_sku
    )
    if problems := automatic_os_upgrade_problems(scale_set, extensions, supported=supported):
        raise ValidationError({"enable_automatic_os_upgrade": problems})


def _image_problems(scale_set: ScaleSet, *, supported: bool) -> list[str]:
    if scale_set.image_source == ImageSource.CUSTOM:
        return [CUSTOM_IMAGE_REFUSED]
    problems = []
    if scale_set.image_version != LATEST:
        problems.append(
            f"Automatic OS upgrades need image version 'latest', not a pinned version "
            f"({scale_set.image_version or 'none'}): set the image version to latest."
        )
    if scale_set.image_source == ImageSource.PLATFORM and not supported:
        image = f"{scale_set.image_publisher}/{scale_set.image_offer}/{scale_set.image_sku}"
        problems.append(
            f"Image {image} is not a supported SKU for automatic OS upgrades: use a supported SKU "
            "(see the supported OS SKUs list) or a Compute Gallery image."
        )
    return problems


def _service_fabric_problems(scale_set: ScaleSet, extensions: Sequence[ScaleSetExtension]) -> list[str]:
    durability = scale_set.service_fabric_durability
    problems = []
    if not durability:
        problems.append(
            "Service Fabric: the set has a Service Fabric extension but no durability tier: "
            "set the durability to Silver or Gold."
        )
    elif durability == ServiceFabricDurability.BRONZE and not scale_set.service_fabric_stateless:
        problems.append(
            "Service Fabric durability Bronze allows automatic OS upgrades only on a stateless node type: "
            "raise the durability to Silver or Gold, or use a stateless node type."
        )
    if not extensions:
        problems.append(
            "Service Fabric: the set has no Service Fabric extension (ServiceFabricNode or "
            "ServiceFabricLinuxNode): add it with typeHandlerVersion 1.1 or later."
        )
    minimum = ".".join(str(part) for part in SERVICE_FABRIC_MIN_VERSION)
    for extension in extensions:
        try:
            too_old = parse_version(extension.type_handler_version) < SERVICE_FABRIC_MIN_VERSION
        except ValidationError:
            too_old = True
        if too_old:
            problems.append(
                f"Service Fabric extension {extension.name} has typeHandlerVersion "
                f"{extension.type_handler_version}: raise it to {minimum} or later."
            )
        level = extension.settings.get("durabilityLevel") if isinstance(extension.settings, dict) else None
        if durability and level != durability:
            problems.append(
                f"Service Fabric durability differs between the cluster ({durability}) and extension "
                f"{extension.name} (durabilityLevel {level or 'not set'}): make them equal."
            )
    return problems
