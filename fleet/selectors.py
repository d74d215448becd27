"""Reads: image resolution, heatmap data and list summaries, each in a fixed number of queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Count, Exists, OuterRef, Q, QuerySet

from fleet import clock
from fleet.heatmap import CELL_STATES, STATE_KEYS, cell_state
from fleet.images import ImageRef
from fleet.models import (
    AuditEntry,
    GalleryImageVersion,
    ImagePublication,
    ImageSource,
    Instance,
    ReplicationState,
    ScaleSet,
    ScaleSetExtension,
    SupportedOsSku,
    UpgradeMode,
)
from fleet.versions import LATEST, version_sort_key


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


# --- the fleet overview (the scale-set list) -------------------------------------------------

# Colour-blind-safe (Okabe–Ito) health parts, in the order the stacked bar draws them.
HEALTH_PARTS: list[tuple[str, str, str]] = [
    ("healthy", "healthy", "#009E73"),
    ("unhealthy", "unhealthy", "#D55E00"),
    ("initializing", "initializing", "#F0E442"),
    ("unknown", "unknown", "#CC79A7"),
    ("stopped", "stopped", "#7F7F7F"),
]
_DOWN_POWER = {"stopping", "stopped", "deallocating", "deallocated"}
_HEALTH_PART = {"Healthy": "healthy", "Unhealthy": "unhealthy", "Initializing": "initializing"}

# A fleet heatmap cell (one set, one update domain) takes the colour of the state that most
# needs an operator's eyes among its instances: a failure first, a finished, healthy domain last.
CELL_PRIORITY = ["failed", "unhealthy", "upgrading", "waiting", "rolled_back", "stopped", "outdated", "up_to_date"]
UPDATE_DOMAIN_COLUMNS = 20

SORT_KEYS = ["name", "group", "region", "zones", "capacity", "mode", "auto", "health", "version", "run"]
RUN_STATES = {
    "upgrading": "upgrading now",
    "failed": "failed last",
    "outdated": "not on latest",
    "none": "never upgraded",
}


@dataclass(frozen=True)
class OverviewFilters:
    """What the overview shows, read from GET parameters (unknown values mean 'all')."""

    search: str = ""
    region: str = ""
    mode: str = ""
    state: str = ""
    sort: str = "name"
    descending: bool = False

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> OverviewFilters:
        sort = query.get("sort", "name")
        state = query.get("state", "")
        return cls(
            search=query.get("q", "").strip()[:100],
            region=query.get("region", "")[:40],
            mode=query.get("mode", "") if query.get("mode", "") in UpgradeMode.values else "",
            state=state if state in RUN_STATES else "",
            sort=sort if sort in SORT_KEYS else "name",
            descending=query.get("dir", "") == "desc",
        )

    @property
    def narrowed(self) -> bool:
        return bool(self.search or self.region or self.mode or self.state)


def scale_set_rows(
    *, region: str = "", mode: str = "", search: str = "", ids: Collection[int] | None = None
) -> list[dict[str, Any]]:
    """One row per set (by name) with its health, image versions and fleet-heatmap cells.

    Three queries whatever the number of sets: the sets, one aggregate over their instances
    grouped by set, update domain and every state field a heatmap cell depends on, and their
    target images (one more when gallery sets are among them). `search` matches the name or
    the resource group; `ids` limits the rows to those sets (the live page's re-fetch).
    """
    sets = ScaleSet.objects.select_related("region", "gallery_image__gallery").annotate(
        auto_extension_upgrade=Exists(
            ScaleSetExtension.objects.filter(scale_set=OuterRef("pk"), enable_automatic_upgrade=True)
        ),
    )
    if region:
        sets = sets.filter(region__name=region)
    if mode:
        sets = sets.filter(upgrade_mode=mode)
    if search:
        sets = sets.filter(Q(name__icontains=search) | Q(resource_group__icontains=search))
    if ids is not None:
        sets = sets.filter(pk__in=list(ids))
    sets_list = list(sets.order_by("name", "pk"))
    if not sets_list:
        return []
    groups = _instance_groups(sets_list)
    targets = target_images(sets_list)
    return [_overview_row(s, targets[s.pk], groups.get(s.pk, [])) for s in sets_list]


def _instance_groups(sets: Sequence[ScaleSet]) -> dict[int, list[dict[str, Any]]]:
    """Instances counted per set, update domain and state fields: the one query over instances."""
    # Filtering by the set ids (not a join or subquery) keeps it one index range scan per set.
    rows = (
        Instance.objects.filter(scale_set_id__in=[s.pk for s in sets])
        .values(
            "scale_set_id",
            "update_domain",
            "os_image",
            "model_version",
            "power_state",
            "provisioning_state",
            "health_state",
            "last_upgrade_outcome",
        )
        .annotate(n=Count("pk"))
        .order_by()
    )
    found: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        found.setdefault(row["scale_set_id"], []).append(dict(row))
    return found


def _overview_row(scale_set: ScaleSet, target: ImageRef | None, groups: list[dict[str, Any]]) -> dict[str, Any]:
    target_key = target.key if target else None
    health = dict.fromkeys((key for key, _, _ in HEALTH_PARTS), 0)
    images: dict[str, int] = {}
    outdated_model = 0
    # update domain -> cell state -> instances
    domains: dict[int, dict[str, int]] = {}
    for g in groups:
        n = g["n"]
        if g["power_state"] in _DOWN_POWER:
            health["stopped"] += n
        else:
            health[_HEALTH_PART.get(g["health_state"], "unknown")] += n
        images[g["os_image"]] = images.get(g["os_image"], 0) + n
        model_applied = g["model_version"] >= scale_set.model_version
        if not model_applied:
            outdated_model += n
        state = cell_state(
            power_state=g["power_state"],
            provisioning_state=g["provisioning_state"],
            health_state=g["health_state"],
            last_upgrade_outcome=g["last_upgrade_outcome"],
            up_to_date=model_applied and (target_key is None or g["os_image"] == target_key),
        )
        cell = domains.setdefault(g["update_domain"], {})
        cell[state] = cell.get(state, 0) + n
    instance_count = sum(health.values())
    on_target = images.get(target_key, 0) if target_key else 0
    health_parts = [
        {"key": key, "label": label, "color": color, "count": health[key]}
        for key, label, color in HEALTH_PARTS
        if health[key]
    ]
    versions = _version_parts(images, target_key)
    return {
        "scale_set": scale_set,
        "target": target,
        "instance_count": instance_count,
        "healthy_count": health["healthy"],
        "down_count": health["stopped"],
        "outdated_model_count": outdated_model,
        "on_target_count": on_target,
        "on_latest": instance_count > 0 and on_target == instance_count and not outdated_model,
        "health": health_parts,
        # the bars' words (screen readers, the text under the bar), written once per row here
        # rather than by template loops: with hundreds of rows the loops were a fifth of the page
        "health_text": ", ".join(f"{p['count']} {p['label']}" for p in health_parts) or "no instances",
        "versions": versions,
        "versions_text": ", ".join(f"{p['count']} {p['label']}" for p in versions) or "no instances",
        "domains": domains,
    }


def _version_parts(images: dict[str, int], target_key: str | None) -> list[dict[str, Any]]:
    """Instances per image, oldest first, the target (latest) marked: the version bar."""

    def order(key: str) -> tuple[int, str]:
        version = ImageRef.from_key(key).version
        try:
            return (0, version_sort_key(version))
        except ValidationError:  # a custom image has no version: after every versioned one
            return (1, key)

    return [
        {
            "label": ImageRef.from_key(key).label,
            "count": images[key],
            "latest": key == target_key,
        }
        for key in sorted(images, key=order)
    ]


def fleet_heatmap_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A set's row of the fleet heatmap: per update domain, the state that matters most (its
    index in CELL_STATES, None where the set has no instance) and the count of each state."""
    columns = max([UPDATE_DOMAIN_COLUMNS, *(ud + 1 for ud in row["domains"])])
    index = {state.key: i for i, state in enumerate(CELL_STATES)}
    cells: list[int | None] = []
    counts: list[dict[str, int] | None] = []
    for ud in range(columns):
        found = row["domains"].get(ud)
        if not found:
            cells.append(None)
            counts.append(None)
            continue
        worst = next(state for state in CELL_PRIORITY if state in found)
        cells.append(index[worst])
        counts.append({state: found[state] for state in STATE_KEYS if state in found})
    scale_set = row["scale_set"]
    return {"id": scale_set.pk, "name": scale_set.name, "cells": cells, "counts": counts}


def fleet_heatmap_states() -> list[dict[str, str]]:
    return [{"key": s.key, "label": s.label, "color": s.color} for s in CELL_STATES]


def run_state_of(run: Any) -> str:
    """The overview's run-state filter value of a set's latest run (duck-typed: fleet does not
    import upgrades)."""
    if run is None:
        return "none"
    if run.status == "RollingForward":
        return "upgrading"
    if run.status == "Faulted":
        return "failed"
    return "done"


def overview_select(rows: list[dict[str, Any]], filters: OverviewFilters) -> list[dict[str, Any]]:
    """Apply the run-state filter and the sort to rows that carry their latest `run`.

    The page's script sorts and filters with the same keys (the rows' data-* attributes), so
    a link and a click show the same order.
    """
    for row in rows:
        row["run_state"] = run_state_of(row.get("run"))
        row["sort"] = _sort_keys(row)
    if filters.state == "outdated":
        rows = [r for r in rows if not r["on_latest"]]
    elif filters.state:
        rows = [r for r in rows if r["run_state"] == filters.state]
    rows.sort(key=lambda r: (r["sort"][filters.sort], r["sort"]["name"]), reverse=filters.descending)
    return rows


_RUN_ORDER = {"upgrading": 0, "failed": 1, "done": 2, "none": 3}


def _sort_keys(row: Mapping[str, Any]) -> dict[str, Any]:
    """Comparable values per column; strings for text, numbers for the rest."""
    s = row["scale_set"]
    total = row["instance_count"]
    run = row.get("run")
    return {
        "name": s.name.lower(),
        "group": s.resource_group.lower(),
        "region": s.region.name,
        "zones": ",".join(s.zones or []),
        "capacity": s.capacity,
        "mode": s.upgrade_mode,
        "auto": int(s.enable_automatic_os_upgrade),
        "health": round(row["healthy_count"] / total, 4) if total else -1,
        "version": round(row["on_target_count"] / total, 4) if total else -1,
        # upgrading first, then failed, then the rest; among equals the newest run first
        "run": _RUN_ORDER[row["run_state"]] * 1e10 - (run.started_at.timestamp() if run else 0),
    }


# --- The audit log --------------------------------------------------------------------------

AUDIT_PANEL_SIZE = 10


def audit_of_scale_set(scale_set_id: int, limit: int = AUDIT_PANEL_SIZE) -> list[AuditEntry]:
    """The set's newest entries (one query, through the audit_newest_per_set index)."""
    return list(AuditEntry.objects.filter(scale_set_id=scale_set_id).order_by("-at", "-pk")[:limit])


def audit_of_run(run_id: int) -> list[AuditEntry]:
    """Who started and who cancelled the run, oldest first (one query)."""
    return list(AuditEntry.objects.filter(run_id=run_id).order_by("at", "pk"))


def audit_entries(*, scale_set: str = "", actor: str = "", action: str = "") -> QuerySet[AuditEntry]:
    """The audit page: newest first, narrowed by set name, user name or action (prefixes)."""
    entries = AuditEntry.objects.all()
    if scale_set:
        entries = entries.filter(scale_set_name__istartswith=scale_set)
    if actor:
        entries = entries.filter(actor_name__istartswith=actor)
    if action:
        entries = entries.filter(action__startswith=action)
    return entries.order_by("-at", "-pk")
