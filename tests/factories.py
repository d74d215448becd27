"""Small typed builders for tests; they go through the real services where there is one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import Group, User

from fleet import clock, services
from fleet.models import Region, ScaleSet
from fleet.roles import OPERATORS, VIEWERS

UBUNTU = {"image_publisher": "Canonical", "image_offer": "UbuntuServer", "image_sku": "18.04-LTS"}
OLD_VERSION = "18.04.202301010"
NEW_VERSION = "18.04.202402020"
SUBSCRIPTION = "11111111-1111-1111-1111-111111111111"

APP_HEALTH_HTTP = {
    "name": "HealthExtension",
    "publisher": "Microsoft.ManagedServices",
    "type": "ApplicationHealthLinux",
    "type_handler_version": "2.0",
    "settings": {"protocol": "http", "port": 80, "requestPath": "/health", "intervalInSeconds": 5, "numberOfProbes": 1},
}
APP_HEALTH_TCP = {
    **APP_HEALTH_HTTP,
    "settings": {"protocol": "tcp", "port": 8080, "intervalInSeconds": 5, "numberOfProbes": 1},
}


def region(name: str = "eastus", zones: list[str] | None = None) -> Region:
    return Region.objects.get_or_create(
        name=name, defaults={"display_name": name.title(), "zones": zones if zones is not None else ["1", "2", "3"]}
    )[0]


def publish(version: str, *regions: Region, at: dt.datetime | None = None, **image: str) -> None:
    spec = {**UBUNTU, **image}
    services.platform_image_publish(
        publisher=spec["image_publisher"],
        offer=spec["image_offer"],
        sku=spec["image_sku"],
        version=version,
        regions=regions or [region()],
        at=at or clock.now() - dt.timedelta(days=1),
    )


def scale_set(name: str = "web", capacity: int = 10, *, where: Region | None = None, **model: Any) -> ScaleSet:
    """A scale set on Ubuntu 18.04 'latest' (OLD_VERSION published if nothing is yet)."""
    where = where or region()
    if "image_source" not in model:
        model = {**UBUNTU, "image_version": "latest", **model}
        publish(OLD_VERSION, where)
    if capacity > 100:
        model.setdefault("single_placement_group", False)
    return services.scale_set_create(
        subscription_id=SUBSCRIPTION, resource_group="rg-test", name=name, region=where, capacity=capacity, **model
    )


def user(username: str, role: str = VIEWERS) -> User:
    """A user with role 'viewers', 'operators' or 'staff'; password = username * 2."""
    account = User.objects.create_user(username=username, password=username * 2, is_staff=role == "staff")
    if role in (VIEWERS, OPERATORS):
        account.groups.add(Group.objects.get_or_create(name=role)[0])
    return account


OLD_KEY = f"platform:Canonical/UbuntuServer/18.04-LTS:{OLD_VERSION}"
NEW_KEY = f"platform:Canonical/UbuntuServer/18.04-LTS:{NEW_VERSION}"


def outdated_scale_set(capacity: int = 20, *, bad_share: float = 0.0, **model: Any) -> ScaleSet:
    """A set on OLD_VERSION with an http Application Health extension, NEW_VERSION published
    since; `bad_share` of the instances never become healthy on the new image."""
    from fleet.models import FaultProfile

    model.setdefault("extensions", [APP_HEALTH_HTTP])
    model.setdefault("zones", [])
    made = scale_set(capacity=capacity, **model)
    publish(NEW_VERSION, made.region, at=clock.now() - dt.timedelta(seconds=1))
    if bad_share:
        FaultProfile.objects.update_or_create(target=NEW_KEY, defaults={"never_healthy_share": bad_share})
    return made


def key_vault(expires_on: dt.datetime) -> dict[str, Any]:
    """A Key Vault extension whose protected settings hold a credential expiring then (R-CRED-1)."""
    return {
        "name": "KeyVault",
        "publisher": "Microsoft.Azure.KeyVault",
        "type": "KeyVaultForLinux",
        "type_handler_version": "2.0",
        "protected_settings": {"credential": {"secret": "s3cret", "expiresOn": expires_on.isoformat()}},
    }
