"""Reads: image resolution, heatmap data and list summaries, each in a fixed number of queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, Q

from fleet import clock
from fleet.heatmap import CELL_STATES, cell_state
from fleet.images import ImageRef
from fleet.models import (
    GalleryImageVersion,
    ImagePublication,
    ImageSource,
    Instance,
    ReplicationState,
    ScaleSet,
    ScaleSetExtension,
    SupportedOsSku,
)
from fleet.versions import LATEST


def latest_platform_version(
    *, publisher: str, offer: str, sku: str, region_id: int, at: dt.datetime | None = None
) -> str | None:
    """The highest version of the image published in the region by `at` (one query)."""
    key = (publisher, offer, sku, region_id)
    return _latest_platform_versions({key}, at or clock.now()).get(key)


def latest_gallery_version(*, gallery_image_id: int, region_id: int) -> str | None:
    """The highest version replicated to the region and not excluded from latest (one query)."""
    return _latest_gallery_versions({gallery_image_id}).get((gallery_image_id, region_id))


def _latest_platform_versions(
    wanted: set[tuple[str, str, str, int]], at: dt.datetime
) -> dict[tuple[str, str, str, int], str]:
    """(publisher, offer, sku, region id) -> the highest version published there by `at`."""
    if not wanted:
        return {}
    condition = Q()
    for publisher, offer, sku, region_id in wanted:
        condition |= Q(
            image_version__publisher=publisher,
            image_version__offer=offer,
            image_version__sku=sku,
            region_id=region_id,
        )
    rows = (
        ImagePublication.objects.filter(condition, published_at__lte=at)
        .values_list(
            "image_version__publisher",
            "image_version__offer",
            "image_version__sku",
            "region_id",
            "image_version__version",
        )
        .order_by("image_version__sort_key")
    )
    # ascending by version: the last one seen for a key is the highest
    return {(publisher, offer, sku, region_id): version for publisher, offer, sku, region_id, version in rows}


def _latest_gallery_versions(image_ids: set[int]) -> dict[tuple[int, int], str]:
    """(gallery image id, region id) -> the highest version completely replicated there and
    not excluded from latest."""
    if not image_ids:
        return {}
    rows = (
        GalleryImageVersion.objects.filter(
            image_id__in=image_ids, exclude_from_latest=False, replicas__state=ReplicationState.COMPLETED
        )
        .values_list("image_id", "replicas__region_id", "name")
        .order_by("sort_key")
    )
    return {(image_id, region_id): name for image_id, region_id, name in rows}


def target_image(scale_set: ScaleSet) -> ImageRef | None:
    """The concrete image the set's model points at now ('latest' resolved); None if nothing
    is published for it in the set's region yet."""
    return target_images([scale_set])[scale_set.pk]


def target_images(scale_sets: Sequence[ScaleSet]) -> dict[int, ImageRef | None]:
    """target_image for many sets in at most two queries, whatever their number."""
    result: dict[int, ImageRef | None] = {}
    platform_latest = _latest_platform_versions(
        {
            (s.image_publisher, s.image_offer, s.image_sku, s.region_id)
            for s in scale_sets
            if s.image_source == ImageSource.PLATFORM and s.image_version == LATEST
        },
        clock.now(),
    )
    gallery_latest = _latest_gallery_versions(
        {
            s.gallery_image_id
            for s in scale_sets
            if s.image_source == ImageSource.GALLERY and s.image_version in ("", LATEST) and s.gallery_image_id
        }
    )
    for s in scale_sets:
        version: str | None = s.image_version
        if s.image_source == ImageSource.CUSTOM:
            result[s.pk] = ImageRef(ImageSource.CUSTOM, s.custom_image_uri, "")
            continue
        if s.image_source == ImageSource.GALLERY:
            assert s.gallery_image_id is not None
            if version in ("", LATEST):
                version = gallery_latest.get((s.gallery_image_id, s.region_id))
            name = gallery_image_name(s)
            result[s.pk] = ImageRef(ImageSource.GALLERY, name, version) if version else None
            continue
        if version == LATEST:
            version = platform_latest.get((s.image_publisher, s.image_offer, s.image_sku, s.region_id))
        name = f"{s.image_publisher}/{s.image_offer}/{s.image_sku}"
        result[s.pk] = ImageRef(ImageSource.PLATFORM, name, version) if version else None
    return result


def is_supported_os_sku(*, publisher: str, offer: str, sku: str) -> bool:
    """Whether automatic OS upgrades support this platform image (R-AUTO-1; one query).
    ARM names are case-insensitive, so the table matches regardless of case."""
    return SupportedOsSku.objects.filter(publisher__iexact=publisher, offer__iexact=offer, sku__iexact=sku).exists()


def pinned_version_missing(scale_set: ScaleSet) -> str | None:
    """A message when the set pins an image version that its region does not have (one query)."""
    version = scale_set.image_version
    if version in ("", LATEST) or scale_set.image_source == ImageSource.CUSTOM:
        return None
    if scale_set.image_source == ImageSource.GALLERY:
        found = GalleryImageVersion.objects.filter(
            image_id=scale_set.gallery_image_id,
            name=version,
            replicas__region_id=scale_set.region_id,
            replicas__state=ReplicationState.COMPLETED,
        ).exists()
    else:
        found = ImagePublication.objects.filter(
            image_version__publisher=scale_set.image_publisher,
            image_version__offer=scale_set.image_offer,
            image_version__sku=scale_set.image_sku,
            image_version__version=version,
            region_id=scale_set.region_id,
            published_at__lte=clock.now(),
        ).exists()
    if found:
        return None
    return f"Image version {version} is not available in {scale_set.region.name}."


def gallery_image_name(scale_set: ScaleSet) -> str:
    image = scale_set.gallery_image
    assert image is not None
    return f"{image.gallery.name}/{image.name}"


# --- heatmap ------------------------------------------------------------------------------

CELL_COLUMNS = [
    "id",
    "placement_group",
    "update_domain",
    "fault_domain",
    "zone",
    "state",
    "image",
    "health",
    "power",
    "provisioning",
    "model_applied",
    "last_error",
]
_CELL_FIELDS = [
    "pk",
    "instance_id",
    "placement_group",
    "update_domain",
    "fault_domain",
    "zone",
    "power_state",
    "provisioning_state",
    "health_state",
    "os_image",
    "model_version",
    "last_upgrade_outcome",
    "last_error",
]


def heatmap_cells(
    scale_set: ScaleSet, *, target: ImageRef | None, instance_pks: Iterable[int] | None = None
) -> list[list[Any]]:
    """One row per instance in CELL_COLUMNS order, sorted by instance id (one query)."""
    rows = Instance.objects.filter(scale_set=scale_set)
    if instance_pks is not None:
        rows = rows.filter(pk__in=list(instance_pks))
    target_key = target.key if target else None
    cells = []
    for row in rows.order_by("instance_id").values(*_CELL_FIELDS):
        model_applied = row["model_version"] >= scale_set.model_version
        up_to_date = model_applied and (target_key is None or row["os_image"] == target_key)
        cells.append(
            [
                row["instance_id"],
                row["placement_group"],
                row["update_domain"],
                row["fault_domain"],
                row["zone"],
                cell_state(
                    power_state=row["power_state"],
                    provisioning_state=row["provisioning_state"],
                    health_state=row["health_state"],
                    last_upgrade_outcome=row["last_upgrade_outcome"],
                    up_to_date=up_to_date,
                ),
                ImageRef.from_key(row["os_image"]).label,
                row["health_state"],
                row["power_state"],
                row["provisioning_state"],
                model_applied,
                row["last_error"],
            ]
        )
    return cells


def heatmap_snapshot(scale_set: ScaleSet) -> dict[str, Any]:
    """Everything the heatmap needs to draw itself from nothing (three queries)."""
    target = target_image(scale_set)
    return {
        "type": "snapshot",
        "scale_set": {
            "id": scale_set.pk,
            "name": scale_set.name,
            "model_version": scale_set.model_version,
            "target_image": target.label if target else None,
            "zones": scale_set.zones,
        },
        "states": [{"key": s.key, "label": s.label, "color": s.color} for s in CELL_STATES],
        "columns": CELL_COLUMNS,
        "cells": heatmap_cells(scale_set, target=target),
    }


def scale_set_for_page(scale_set_id: int) -> ScaleSet:
    return ScaleSet.objects.select_related("region", "gallery_image__gallery").get(pk=scale_set_id)


# --- list -------------------------------------------------------------------------------


def scale_set_rows(*, region: str = "", mode: str = "", search: str = "") -> list[dict[str, Any]]:
    """The scale-set list with a health and state summary per set (bounded queries)."""
    sets = ScaleSet.objects.select_related("region", "gallery_image__gallery").annotate(
        instance_count=Count("instances"),
        healthy_count=Count("instances", filter=Q(instances__health_state="Healthy")),
        down_count=Count(
            "instances",
            filter=Q(instances__power_state__in=["stopping", "stopped", "deallocating", "deallocated"]),
        ),
        outdated_model_count=Count("instances", filter=Q(instances__model_version__lt=F("model_version"))),
        auto_extension_upgrade=Exists(
            ScaleSetExtension.objects.filter(scale_set=OuterRef("pk"), enable_automatic_upgrade=True)
        ),
    )
    if region:
        sets = sets.filter(region__name=region)
    if mode:
        sets = sets.filter(upgrade_mode=mode)
    if search:
        sets = sets.filter(name__icontains=search)
    sets_list = list(sets.order_by("name"))
    image_counts = _instances_per_image(sets_list)
    targets = target_images(sets_list)
    rows = []
    for scale_set in sets_list:
        target = targets[scale_set.pk]
        on_target = image_counts.get((scale_set.pk, target.key), 0) if target else 0
        rows.append(
            {
                "scale_set": scale_set,
                "target": target,
                "instance_count": scale_set.instance_count,  # type: ignore[attr-defined]
                "healthy_count": scale_set.healthy_count,  # type: ignore[attr-defined]
                "down_count": scale_set.down_count,  # type: ignore[attr-defined]
                "outdated_model_count": scale_set.outdated_model_count,  # type: ignore[attr-defined]
                "on_target_count": on_target,
            }
        )
    return rows


def _instances_per_image(sets: Sequence[ScaleSet]) -> dict[tuple[int, str], int]:
    counts = (
        Instance.objects.filter(scale_set__in=sets)
        .values("scale_set_id", "os_image")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {(row["scale_set_id"], row["os_image"]): row["n"] for row in counts}
