"""The demo fleet: regions, an image catalog, a gallery, nine scale sets and three users.

Loaded by `make run` (through `manage.py demo_fleet`); loading again keeps what is there.
Sets are created on the image versions that were latest at the time, then a newer version is
published, so the heatmaps open with work to do.

One set, `app-local-eastus`, is ten real processes on this machine (the local-process driver):
it boots the demo app 1.0.0 from the local image store, and an operator can roll out a good
version (1.1.0, 1.5.0) or a broken one (1.3.0 answers Unhealthy, 1.4.0 never listens) by
changing its image version, and watch the gates stop it for real.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import transaction

from fleet import clock, services
from fleet.models import Gallery, GalleryImage, Region, ScaleSet
from fleet.roles import DEMO_USERS as USERS

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"

REGIONS = [  # name, display name, zones, geo pair
    ("eastus", "East US", ["1", "2", "3"], "westus"),
    ("westus", "West US", [], "eastus"),
    ("northeurope", "North Europe", ["1", "2", "3"], "westeurope"),
    ("westeurope", "West Europe", ["1", "2", "3"], "northeurope"),
    ("southeastasia", "Southeast Asia", ["1", "2", "3"], "eastasia"),
    ("eastasia", "East Asia", [], "southeastasia"),
]

JAMMY = ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-LTS")
BIONIC = ("Canonical", "UbuntuServer", "18.04-LTS")
WINDOWS = ("MicrosoftWindowsServer", "WindowsServer", "2019-Datacenter")
MARINER = ("MicrosoftCblMariner", "Cbl-Mariner", "cbl-mariner-2")
# Versions published before the sets are made (the sets boot from the highest of these) …
CATALOG = {
    JAMMY: ["22.04.202409110", "22.04.202410020"],
    BIONIC: ["18.04.202306070", "18.04.202401161"],
    WINDOWS: ["17763.6293.240905", "17763.6414.241004"],
    MARINER: ["2.20240902.1", "2.20241002.1"],
}
# … and these after, everywhere, so the sets open outdated (and the sets with automatic OS
# upgrades get an availability-first rollout after the trigger delay).
NEWER = {JAMMY: "22.04.202411050", WINDOWS: "17763.6532.241101", MARINER: "2.20241104.1"}
# Extension versions released (publisher, type, version): the models' versions, then newer
# ones that extensions with enableAutomaticUpgrade take by themselves (R-EXT-1).
EXTENSION_RELEASES = [
    ("Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentLinux", "9.10"),
    ("Microsoft.Azure.KeyVault", "KeyVaultForLinux", "2.0"),
    ("Microsoft.GuestConfiguration", "ConfigurationforWindows", "1.29"),
    ("Microsoft.GuestConfiguration", "ConfigurationforLinux", "1.26"),
]
NEWER_EXTENSIONS = [
    ("Microsoft.GuestConfiguration", "ConfigurationforLinux", "1.27"),
    ("Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentLinux", "9.11"),
]


def _app_health(protocol: str = "http", port: int = 80, path: str = "/health") -> dict[str, Any]:
    settings: dict[str, Any] = {"protocol": protocol, "port": port, "intervalInSeconds": 5, "numberOfProbes": 1}
    if protocol != "tcp":
        settings["requestPath"] = path
    return {
        "name": "HealthExtension",
        "publisher": "Microsoft.ManagedServices",
        "type": "ApplicationHealthLinux",
        "type_handler_version": "2.0",
        "settings": settings,
    }


DEPENDENCY_AGENT = {
    "name": "DependencyAgent",
    "publisher": "Microsoft.Azure.Monitoring.DependencyAgent",
    "type": "DependencyAgentLinux",
    "type_handler_version": "9.10",
    "enable_automatic_upgrade": True,
}
KEY_VAULT = {
    "name": "KeyVault",
    "publisher": "Microsoft.Azure.KeyVault",
    "type": "KeyVaultForLinux",
    "type_handler_version": "2.0",
    "enable_automatic_upgrade": True,
    "provision_after_extensions": ["HealthExtension"],
    "settings": {"secretsManagementSettings": {"pollingIntervalInS": "3600"}},
}


def _key_vault_expiring_in(delta: dt.timedelta) -> dict[str, Any]:
    """Key Vault with a credential that expires soon: the page warns of it (R-CRED-1)."""
    credential = {"clientId": "demo-client", "secret": "********", "expiresOn": (clock.now() + delta).isoformat()}
    return {**KEY_VAULT, "protected_settings": {"credential": credential}}


GUEST_CONFIGURATION_WINDOWS = {
    "name": "AzurePolicyforWindows",
    "publisher": "Microsoft.GuestConfiguration",
    "type": "ConfigurationforWindows",
    "type_handler_version": "1.29",
    "enable_automatic_upgrade": True,
}
GUEST_CONFIGURATION_LINUX = {
    "name": "AzurePolicyforLinux",
    "publisher": "Microsoft.GuestConfiguration",
    "type": "ConfigurationforLinux",
    "type_handler_version": "1.26",
    "enable_automatic_upgrade": True,
}
SERVICE_FABRIC = {
    "name": "ServiceFabricNode",
    "publisher": "Microsoft.Azure.ServiceFabric",
    "type": "ServiceFabricNode",
    "type_handler_version": "1.1",
    "settings": {"durabilityLevel": "Silver", "nodeTypeRef": "frontend"},
}


def _image(triple: tuple[str, str, str], version: str = "latest") -> dict[str, Any]:
    publisher, offer, sku = triple
    return {"image_publisher": publisher, "image_offer": offer, "image_sku": sku, "image_version": version}


@dataclass
class DemoSummary:
    created: list[str] = field(default_factory=list)
    already_loaded: bool = False
    users: list[tuple[str, str, str]] = field(default_factory=lambda: list(USERS))


def demo_fleet_load() -> DemoSummary:
    """Load the demo fleet unless a demo set already exists (then change nothing but add the
    local-process set, should a fleet loaded before it existed lack it)."""
    if ScaleSet.objects.filter(subscription_id=SUBSCRIPTION).exists():
        _users_ensure()
        summary = DemoSummary(already_loaded=True)
        with transaction.atomic():
            if _local_set_ensure():
                summary.created.append(LOCAL_SET)
        return summary
    summary = DemoSummary()
    with transaction.atomic():
        regions = _regions_create()
        long_ago = clock.now() - dt.timedelta(days=60)
        for triple, versions in CATALOG.items():
            for age, version in enumerate(reversed(versions)):
                services.platform_image_publish(
                    publisher=triple[0],
                    offer=triple[1],
                    sku=triple[2],
                    version=version,
                    regions=regions.values(),
                    at=long_ago + dt.timedelta(days=30 - 15 * age),
                )
        gallery_image = _gallery_create(regions)
        for spec in _scale_set_specs(regions, gallery_image):
            services.scale_set_create(subscription_id=SUBSCRIPTION, **spec)
            summary.created.append(spec["name"])
        for publisher, type_, version in EXTENSION_RELEASES:
            services.extension_version_publish(publisher=publisher, type=type_, version=version, at=long_ago)
        for triple, version in NEWER.items():
            services.platform_image_publish(
                publisher=triple[0], offer=triple[1], sku=triple[2], version=version, regions=regions.values()
            )
        for publisher, type_, version in NEWER_EXTENSIONS:
            services.extension_version_publish(publisher=publisher, type=type_, version=version)
        if _local_set_ensure():
            summary.created.append(LOCAL_SET)
        _users_ensure()
    return summary


LOCAL_SET = "app-local-eastus"


def _local_set_ensure() -> bool:
    """The demo app's versions built in the local image store and published in East US, and
    a set of ten local processes on 1.0.0 (Rolling, Application Health over http); returns
    whether the set was made."""
    from fleet.drivers.local import images

    if ScaleSet.objects.filter(subscription_id=SUBSCRIPTION, name=LOCAL_SET).exists():
        return False
    region = Region.objects.filter(name="eastus").first()
    if region is None:
        return False
    publisher, offer, sku = images.DEMO_APP
    first = clock.now() - dt.timedelta(days=len(images.DEMO_RELEASES))
    for day, release in enumerate(images.DEMO_RELEASES):
        if images.find(release.key) is None:
            images.build(release.key, behaviour=release.behaviour, boot_seconds=release.boot_seconds)
        services.platform_image_publish(
            publisher=publisher,
            offer=offer,
            sku=sku,
            version=release.version,
            regions=[region],
            at=first + dt.timedelta(days=day),
        )
    services.scale_set_create(
        subscription_id=SUBSCRIPTION,
        name=LOCAL_SET,
        resource_group="rg-local",
        region=region,
        capacity=10,
        zones=[],
        driver="local",
        image_publisher=publisher,
        image_offer=offer,
        image_sku=sku,
        image_version=images.DEMO_RELEASES[0].version,
        upgrade_mode="Rolling",
        max_batch_instance_percent=20,
        extensions=[_app_health(port=8080)],
    )
    return True


def _regions_create() -> dict[str, Region]:
    regions = {
        name: Region.objects.update_or_create(name=name, defaults={"display_name": display, "zones": zones})[0]
        for name, display, zones, _ in REGIONS
    }
    for name, _, _, pair in REGIONS:
        if name < pair:
            services.region_pair(region=regions[name], partner=regions[pair])
    return {name: Region.objects.get(name=name) for name in regions}


def _gallery_create(regions: dict[str, Region]) -> GalleryImage:
    gallery = Gallery.objects.create(
        subscription_id=SUBSCRIPTION, resource_group="rg-images", name="contosoGallery", region=regions["eastus"]
    )
    image = GalleryImage.objects.create(gallery=gallery, name="web-app", os_type="Linux")
    services.gallery_image_version_publish(image=image, name="1.0.0", target_regions=regions.values())
    services.gallery_image_version_publish(image=image, name="1.1.0", target_regions=[regions["eastus"]])
    services.gallery_image_version_publish(
        image=image, name="1.2.0", target_regions=[regions["eastus"]], exclude_from_latest=True
    )
    return image


def _scale_set_specs(regions: dict[str, Region], gallery_image: GalleryImage) -> list[dict[str, Any]]:
    return [
        {
            "name": "web-eastus",
            "resource_group": "rg-web",
            "region": regions["eastus"],
            "capacity": 1000,
            "single_placement_group": False,
            **_image(JAMMY),
            "upgrade_mode": "Rolling",
            "enable_automatic_os_upgrade": True,
            "extensions": [_app_health(), DEPENDENCY_AGENT, GUEST_CONFIGURATION_LINUX],
        },
        {
            "name": "api-northeurope",
            "resource_group": "rg-api",
            "region": regions["northeurope"],
            "zones": ["1", "2", "3"],
            "capacity": 30,
            **_image(JAMMY),
            "upgrade_mode": "Rolling",
            "pause_time_between_batches": "PT10S",
            "extensions": [_app_health(), _key_vault_expiring_in(dt.timedelta(days=12))],
        },
        {
            "name": "iis-westeurope",
            "resource_group": "rg-win",
            "region": regions["westeurope"],
            "capacity": 12,
            "os_type": "Windows",
            "vm_size": "Standard_D4s_v3",
            **_image(WINDOWS),
            "upgrade_mode": "Rolling",
            "enable_automatic_os_upgrade": True,
            "enable_automatic_updates": False,
            "health_probe_protocol": "http",
            "health_probe_port": 80,
            "health_probe_path": "/",
            "extensions": [GUEST_CONFIGURATION_WINDOWS],
        },
        {
            "name": "sf-frontend-westus",
            "resource_group": "rg-sf",
            "region": regions["westus"],
            "capacity": 10,
            "os_type": "Windows",
            **_image(WINDOWS),
            "upgrade_mode": "Automatic",
            "enable_automatic_updates": False,
            "service_fabric_durability": "Silver",
            "extensions": [SERVICE_FABRIC],
        },
        {
            "name": "app-gallery-eastus",
            "resource_group": "rg-app",
            "region": regions["eastus"],
            "capacity": 20,
            "image_source": "gallery",
            "gallery_image": gallery_image,
            "image_version": "latest",
            "upgrade_mode": "Rolling",
            "max_batch_instance_percent": 25,
            "extensions": [_app_health("tcp", 8080)],
        },
        {
            "name": "batch-southeastasia",
            "resource_group": "rg-batch",
            "region": regions["southeastasia"],
            "capacity": 50,
            "vm_size": "Standard_F8s_v2",
            **_image(MARINER),
            "upgrade_mode": "Manual",
            "platform_fault_domain_count": 3,
            "extensions": [DEPENDENCY_AGENT],
        },
        {
            "name": "legacy-eastasia",
            "resource_group": "rg-legacy",
            "region": regions["eastasia"],
            "capacity": 5,
            "image_source": "custom",
            "custom_image_uri": "https://contosoimages.blob.core.windows.net/vhds/legacy-app-2019.vhd",
            "upgrade_mode": "Manual",
        },
        {
            "name": "tools-westus",
            "resource_group": "rg-tools",
            "region": regions["westus"],
            "capacity": 3,
            "vm_size": "Standard_B2s",
            **_image(BIONIC, "18.04.202306070"),
            "upgrade_mode": "Manual",
        },
    ]


def _users_ensure() -> None:
    for username, password, role in USERS:
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password(password)
            user.is_staff = user.is_superuser = role == "staff"
            user.save()
            if role != "staff":
                user.groups.add(Group.objects.get(name=role))
