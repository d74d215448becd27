"""Reads for the API, each in a fixed number of queries whatever the number of instances."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from api.arm import ArmError, resource_not_found
from fleet import clock
from fleet.models import Instance, ScaleSet, ScaleSetExtension
from upgrades.models import Kind, UpgradeRun


@dataclass(frozen=True)
class Page:
    """One page of a keyset-paged list and the key to continue after, if there is more."""

    rows: list[Any]
    next_after: int | None


def parse_skiptoken(value: str | None) -> int | None:
    """`$skiptoken` is the last key of the previous page (opaque to clients)."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ValidationError({"$skiptoken": "The $skiptoken is not one this API issued; follow nextLink as given."})
    return int(value)


def keyset_page(queryset: QuerySet[Any], *, key: str, after: int | None, size: int) -> Page:
    """Rows ordered by `key` after the given key: stable under inserts and deletes elsewhere
    in the list (no row seen twice), and one query per page (size + 1 rows tell if there is more)."""
    if after is not None:
        queryset = queryset.filter(**{f"{key}__gt": after})
    rows = list(queryset.order_by(key)[: size + 1])
    if len(rows) > size:
        return Page(rows[:size], getattr(rows[size - 1], key))
    return Page(rows, None)


def subscription_ids() -> list[str]:
    """Every subscription that holds a scale set (one query)."""
    return list(ScaleSet.objects.order_by("subscription_id").values_list("subscription_id", flat=True).distinct())


def _scale_sets() -> QuerySet[ScaleSet]:
    return ScaleSet.objects.select_related("region", "gallery_image__gallery")


def scale_set_page(*, subscription_id: str, resource_group: str | None, after: int | None, size: int) -> Page:
    """A page of scale sets in a subscription (or one of its resource groups), with their
    extensions (two queries)."""
    sets = _scale_sets().filter(subscription_id=subscription_id)
    if resource_group is not None:
        sets = sets.filter(resource_group=resource_group)
    page = keyset_page(sets, key="pk", after=after, size=size)
    extensions = extensions_by_set(page.rows)
    return Page([(s, extensions.get(s.pk, [])) for s in page.rows], page.next_after)


def extensions_by_set(sets: Sequence[ScaleSet]) -> dict[int, list[ScaleSetExtension]]:
    result: dict[int, list[ScaleSetExtension]] = {}
    for ext in ScaleSetExtension.objects.filter(scale_set__in=[s.pk for s in sets]).order_by("name"):
        result.setdefault(ext.scale_set_id, []).append(ext)
    return result


def scale_set_find(*, subscription_id: str, resource_group: str, name: str) -> ScaleSet | None:
    """The set, or None (one query). ARM names are case-insensitive."""
    return (
        _scale_sets()
        .filter(subscription_id__iexact=subscription_id, resource_group__iexact=resource_group, name__iexact=name)
        .first()
    )


def scale_set_get(*, subscription_id: str, resource_group: str, name: str) -> ScaleSet:
    """The set, or 404 in ARM's words (one query)."""
    found = scale_set_find(subscription_id=subscription_id, resource_group=resource_group, name=name)
    if found is None:
        raise resource_not_found("Microsoft.Compute/virtualMachineScaleSets", name, resource_group)
    return found


def extensions_of(scale_set: ScaleSet) -> list[ScaleSetExtension]:
    return list(ScaleSetExtension.objects.filter(scale_set=scale_set).order_by("name"))


def instance_page(*, scale_set: ScaleSet, after: int | None, size: int) -> Page:
    """A page of the set's instances by instance id, with their data disks (two queries)."""
    instances = Instance.objects.filter(scale_set=scale_set).prefetch_related("data_disks")
    page = keyset_page(instances, key="instance_id", after=after, size=size)
    for instance in page.rows:
        instance.scale_set = scale_set  # names and ids need it; no query per instance
    return page


def instance_get(*, scale_set: ScaleSet, instance_id: str) -> Instance:
    """One instance by its id (digits only, compared as a number), or 404 (two queries)."""
    found = (
        Instance.objects.filter(scale_set=scale_set, instance_id=int(instance_id))
        .prefetch_related("data_disks")
        .first()
        if instance_id.isascii() and instance_id.isdigit()
        else None
    )
    if found is None:
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{scale_set.name}/virtualMachines/{instance_id}' "
            f"under resource group '{scale_set.resource_group}' was not found.",
        )
    found.scale_set = scale_set  # the name needs it; no query
    return found


def instance_states(scale_set: ScaleSet) -> list[tuple[str, str, dict[str, Any]]]:
    """(provisioning state, power state, extension states) of every instance (one query)."""
    return list(
        Instance.objects.filter(scale_set=scale_set).values_list(
            "provisioning_state", "power_state", "extension_states"
        )
    )


# Runs ARM calls rolling upgrades (GET rollingUpgrades/latest): not manualupgrade's.
ROLLING_KINDS = (Kind.AUTOMATIC_OS, Kind.MANUAL_OS, Kind.ROLLING_MODEL, Kind.EXTENSION)
OS_UPGRADE_KINDS = (Kind.AUTOMATIC_OS, Kind.MANUAL_OS)
OS_UPGRADE_HISTORY_LENGTH = 5
OS_UPGRADE_HISTORY_DAYS = 60


def latest_rolling_upgrade(scale_set: ScaleSet) -> UpgradeRun | None:
    """The set's newest rolling upgrade, finished or not (one query)."""
    return UpgradeRun.objects.filter(scale_set=scale_set, kind__in=ROLLING_KINDS).order_by("-started_at", "-pk").first()


def os_upgrade_history(scale_set: ScaleSet) -> list[UpgradeRun]:
    """R-HIST-1: the last five OS upgrade attempts of the past two months, newest first (one
    query)."""
    since = clock.now() - dt.timedelta(days=OS_UPGRADE_HISTORY_DAYS)
    runs = UpgradeRun.objects.filter(scale_set=scale_set, kind__in=OS_UPGRADE_KINDS, started_at__gte=since)
    return list(runs.order_by("-started_at", "-pk")[:OS_UPGRADE_HISTORY_LENGTH])
