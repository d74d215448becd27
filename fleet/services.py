"""Writes to the fleet: each a keyword-only function doing one business action in one
transaction, validating first and publishing to open pages on commit."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from fleet import audit, clock, events
from fleet.auto_upgrade import validate_automatic_os_upgrade
from fleet.drivers import PowerAction, driver_for
from fleet.health import validate_health_sources
from fleet.models import (
    DataDisk,
    ExtensionVersion,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    HealthState,
    ImagePublication,
    Instance,
    PlatformImageVersion,
    PowerState,
    ProvisioningState,
    Region,
    ReplicationState,
    ScaleSet,
    ScaleSetExtension,
)
from fleet.placement import place
from fleet.selectors import pinned_version_missing, target_image

log = logging.getLogger(__name__)


@transaction.atomic
def region_pair(*, region: Region, partner: Region | None) -> None:
    """Make two regions each other's geo pair (symmetric), unpairing their old partners."""
    if partner is not None and partner.pk == region.pk:
        raise ValidationError("A region cannot be its own geo pair.")
    Region.objects.filter(geo_pair__in=[r for r in (region, partner) if r is not None]).update(geo_pair=None)
    Region.objects.filter(pk=region.pk).update(geo_pair=None)
    if partner is not None:
        Region.objects.filter(pk=partner.pk).update(geo_pair=None)
        Region.objects.filter(pk=region.pk).update(geo_pair=partner)
        Region.objects.filter(pk=partner.pk).update(geo_pair=region)
    region.refresh_from_db()
    if partner is not None:
        partner.refresh_from_db()


@transaction.atomic
def platform_image_publish(
    *,
    publisher: str,
    offer: str,
    sku: str,
    version: str,
    regions: Iterable[Region],
    at: dt.datetime | None = None,
) -> PlatformImageVersion:
    """Publish a platform image version in regions (again, for more regions, is fine)."""
    image_version = PlatformImageVersion.objects.filter(
        publisher=publisher, offer=offer, sku=sku, version=version
    ).first()
    if image_version is None:
        image_version = PlatformImageVersion(publisher=publisher, offer=offer, sku=sku, version=version)
        image_version.full_clean()
        image_version.save()
    published_at = at or clock.now()
    regions = list(regions)
    for region in regions:
        ImagePublication.objects.get_or_create(
            image_version=image_version, region=region, defaults={"published_at": published_at}
        )
    audit.record(
        "image.publish",
        f"Published {publisher}:{offer}:{sku}:{version} in {', '.join(sorted(r.name for r in regions)) or 'no region'}",
    )
    _latest_may_have_moved(
        ScaleSet.objects.filter(image_publisher=publisher, image_offer=offer, image_sku=sku).values_list(
            "pk", flat=True
        )
    )
    return image_version


def _latest_may_have_moved(scale_set_ids: Iterable[int]) -> None:
    """Open heatmaps of these sets redraw: 'latest' may resolve to a new version (on commit)."""
    for scale_set_id in scale_set_ids:
        events.scale_set_changed(scale_set_id)


@transaction.atomic
def gallery_image_version_publish(
    *,
    image: GalleryImage,
    name: str,
    target_regions: Iterable[Region],
    exclude_from_latest: bool = False,
    replication_seconds: float = 0.0,
) -> GalleryImageVersion:
    """Create a gallery image version; replication to each target region completes after
    `replication_seconds` of simulated time (see gallery_replication_advance)."""
    regions = list(target_regions)
    if not regions:
        raise ValidationError({"target_regions": "A gallery image version needs at least one target region."})
    version = GalleryImageVersion(
        image=image, name=name, exclude_from_latest=exclude_from_latest, published_at=clock.now()
    )
    version.full_clean()
    version.save()
    completes_at = clock.after(replication_seconds)
    done = replication_seconds <= 0
    GalleryImageReplica.objects.bulk_create(
        GalleryImageReplica(
            version=version,
            region=region,
            state=ReplicationState.COMPLETED if done else ReplicationState.REPLICATING,
            completes_at=completes_at,
        )
        for region in regions
    )
    audit.record(
        "image.publish",
        f"Published gallery image version {image.name} {name} to {', '.join(sorted(r.name for r in regions))}",
    )
    if done:
        _latest_may_have_moved(ScaleSet.objects.filter(gallery_image=image).values_list("pk", flat=True))
    return version


@transaction.atomic
def extension_version_publish(
    *, publisher: str, type: str, version: str, at: dt.datetime | None = None
) -> ExtensionVersion:
    """Release a version of an extension (publisher.type). Every set whose extension opted in
    to enableAutomaticUpgrade and runs an older version of the same major then gets it through
    an availability-first rollout (R-EXT-1, R-AVAIL-1). Releasing it again changes nothing."""
    existing = ExtensionVersion.objects.filter(publisher=publisher, type=type, version=version).first()
    if existing is not None:
        return existing
    release = ExtensionVersion(publisher=publisher, type=type, version=version, published_at=at or clock.now())
    release.full_clean()
    release.save()
    audit.record("extension.publish", f"Released extension {publisher}.{type} {version}")
    return release


def gallery_replication_advance(now: dt.datetime) -> int:
    """Complete the replications that fell due."""
    due = GalleryImageReplica.objects.filter(state=ReplicationState.REPLICATING, completes_at__lte=now)
    images = set(due.values_list("version__image_id", flat=True))
    if not images:
        return 0
    with transaction.atomic():
        completed = due.update(state=ReplicationState.COMPLETED)
        _latest_may_have_moved(ScaleSet.objects.filter(gallery_image__in=images).values_list("pk", flat=True))
    return completed


def scale_set_create(
    *,
    subscription_id: str,
    resource_group: str,
    name: str,
    region: Region,
    capacity: int,
    extensions: Sequence[dict[str, Any]] = (),
    data_disks: int = 1,
    **model: Any,
) -> ScaleSet:
    """Create a scale set and its instances, placed and provisioned on the resolved image.

    `model` takes ScaleSet field names (image_publisher=…, upgrade_mode=…, …). Every field
    is validated before anything is written; an invalid set writes nothing.
    """
    scale_set = ScaleSet(
        subscription_id=subscription_id,
        resource_group=resource_group,
        name=name,
        region=region,
        capacity=capacity,
        **model,
    )
    scale_set.full_clean()
    extension_rows = [ScaleSetExtension(scale_set=scale_set, **spec) for spec in extensions]
    for ext in extension_rows:
        ext.full_clean(exclude=["scale_set"])
    validate_health_sources(scale_set, extension_rows)
    if scale_set.enable_automatic_os_upgrade:
        validate_automatic_os_upgrade(scale_set, extension_rows)  # R-AUTO-1
    if missing := pinned_version_missing(scale_set):
        raise ValidationError({"image_version": missing})
    image = target_image(scale_set)
    if image is None:
        raise ValidationError({"image_version": f"No version of this image is available in {region.name} yet."})
    if scale_set.enable_automatic_os_upgrade:
        scale_set.automatic_os_upgrade_enabled_at = clock.now()
    with transaction.atomic():
        scale_set.save()
        for ext in extension_rows:
            ext.scale_set = scale_set
        ScaleSetExtension.objects.bulk_create(extension_rows)
        extension_states = {e.name: {"version": e.type_handler_version, "state": "Succeeded"} for e in extension_rows}
        _instances_create(scale_set, range(capacity), image.key, extension_states, data_disks)
        audit.record("scale_set.create", f"Created with {capacity} instances on {image.label}", scale_set=scale_set)
    return scale_set


def _instances_create(
    scale_set: ScaleSet,
    instance_ids: Iterable[int],
    image_key: str,
    extension_states: dict[str, Any],
    data_disks: int,
) -> None:
    instances = []
    for instance_id in instance_ids:
        spot = place(
            instance_id,
            zones=scale_set.zones,
            fault_domain_count=scale_set.platform_fault_domain_count,
            single_placement_group=scale_set.single_placement_group,
        )
        instances.append(
            Instance(
                scale_set=scale_set,
                instance_id=instance_id,
                placement_group=spot.placement_group,
                update_domain=spot.update_domain,
                fault_domain=spot.fault_domain,
                zone=spot.zone,
                power_state=PowerState.RUNNING,
                provisioning_state=ProvisioningState.SUCCEEDED,
                health_state=HealthState.HEALTHY,
                os_disk=f"{scale_set.name}_{instance_id}_OsDisk_1",
                os_image=image_key,
                extension_states=extension_states,
                model_version=scale_set.model_version,
            )
        )
    Instance.objects.bulk_create(instances, batch_size=500)
    created = Instance.objects.filter(scale_set=scale_set, instance_id__in=[i.instance_id for i in instances])
    disks = []
    for pk, instance_id in created.values_list("pk", "instance_id"):
        for lun in range(data_disks):
            seed = f"{scale_set.resource_id}/{instance_id}/lun{lun}"
            disks.append(DataDisk(instance_id=pk, lun=lun, content_seed=seed, checksum=DataDisk.checksum_of(seed)))
    DataDisk.objects.bulk_create(disks, batch_size=1000)


def instances_add(scale_set: ScaleSet, count: int) -> None:
    """Scale out: `count` new instances on the model's current image, with its extensions,
    ids after the highest in use (ARM never reuses an instance id while the set lives), and as
    many data disks as the set's first instance has."""
    image = target_image(scale_set)
    if image is None:
        raise ValidationError({"capacity": f"No version of the set's image is available in {scale_set.region.name}."})
    highest = scale_set.instances.order_by("-instance_id").values_list("instance_id", flat=True).first()
    start = -1 if highest is None else highest
    first = scale_set.instances.order_by("instance_id").first()
    data_disks = first.data_disks.count() if first is not None else 1
    extension_states = {
        e.name: {"version": e.effective_version, "state": "Succeeded"} for e in scale_set.extensions.all()
    }
    _instances_create(scale_set, range(start + 1, start + 1 + count), image.key, extension_states, data_disks)
    events.scale_set_changed(scale_set.pk)


def instances_remove(scale_set: ScaleSet, count: int) -> list[int]:
    """Scale in: remove the `count` newest instances (highest ids), data disks with them.
    Returns the ids removed."""
    doomed = list(scale_set.instances.order_by("-instance_id").values_list("instance_id", flat=True)[:count])
    scale_set.instances.filter(instance_id__in=doomed).delete()
    events.scale_set_changed(scale_set.pk)
    return sorted(doomed)


def instances_select(scale_set: ScaleSet, instance_ids: Sequence[int | str] | str) -> list[Instance]:
    """The instances named by ids (numbers or numeric strings) or '*' for all; unknown ids
    are refused by name, so a typo never silently acts on fewer instances."""
    rows = Instance.objects.filter(scale_set=scale_set).order_by("instance_id")
    if instance_ids == "*" or (isinstance(instance_ids, list | tuple) and list(instance_ids) == ["*"]):
        return list(rows)
    wanted: set[int] = set()
    for raw in instance_ids:
        if isinstance(raw, bool) or not (str(raw).isascii() and str(raw).isdigit()):
            raise ValidationError({"instance_ids": f"'{raw}' is not an instance id."})
        wanted.add(int(raw))
    found = list(rows.filter(instance_id__in=wanted))
    missing = wanted - {i.instance_id for i in found}
    if missing:
        raise ValidationError(
            {"instance_ids": f"{scale_set.name} has no instance {', '.join(map(str, sorted(missing)))}."}
        )
    return found


POWER_ACTION_DONE = {
    PowerAction.START: "Started",
    PowerAction.RESTART: "Restarted",
    PowerAction.POWER_OFF: "Powered off",
    PowerAction.DEALLOCATE: "Deallocated",
}


def instances_power(
    *, scale_set: ScaleSet, instance_ids: Sequence[int | str] | str, action: PowerAction
) -> list[Instance]:
    """Start, restart, power off or deallocate instances (SPEC 3.3, power actions)."""
    instances = instances_select(scale_set, instance_ids)
    with transaction.atomic():
        driver_for(scale_set).power(instances, action)
        audit.record(
            f"instances.{action}",
            f"{POWER_ACTION_DONE[action]} {instances_named(instances)}",
            scale_set=scale_set,
            details={"instance_ids": [instance.instance_id for instance in instances]},
        )
    return instances


def instances_set_maintenance(
    *, scale_set: ScaleSet, instance_ids: Sequence[int | str] | str, on: bool
) -> list[Instance]:
    """Maintenance makes instances unhealthy until it ends (the simulator's fault knob)."""
    instances = instances_select(scale_set, instance_ids)
    with transaction.atomic():
        driver_for(scale_set).set_maintenance(instances, on=on)
        audit.record(
            "instances.maintenance",
            f"Maintenance {'on' if on else 'off'}: {instances_named(instances)}",
            scale_set=scale_set,
            details={"instance_ids": [instance.instance_id for instance in instances]},
        )
    return instances


def instances_named(instances: Sequence[Instance]) -> str:
    """'instance 3', or '12 instances (0, 1, … and 2 more)', for an audit entry."""
    ids = [str(instance.instance_id) for instance in instances]
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    return f"instance {shown}" if len(ids) == 1 else f"{len(ids)} instances ({shown})"


# Called, after commit, with the ids of the scale sets whose instances the simulator changed.
# The upgrades app registers its wake-up here (UpgradesConfig.ready): fleet never imports it.
_steps_applied_callbacks: list[Callable[[list[int]], Any]] = []


def on_simulator_steps_applied(callback: Callable[[list[int]], Any]) -> None:
    """Register `callback(scale_set_ids)`, called after the simulator applied due steps that
    changed instances of those sets (once per callback; registering twice is harmless)."""
    if callback not in _steps_applied_callbacks:
        _steps_applied_callbacks.append(callback)


def simulator_advance(now: dt.datetime | None = None) -> int:
    """Apply every simulated change that fell due (the beat each second, and precise ticks)."""
    from fleet.drivers import simulator

    moment = now or clock.now()
    gallery_replication_advance(moment)
    changed: list[int] = []
    with transaction.atomic():
        # The first on-commit callback: whoever waits on these instances hears of the change
        # before the heatmap deltas are computed and sent.
        transaction.on_commit(lambda: _steps_applied(changed))
        advanced = simulator.advance_steps(moment)
        changed.extend(sorted(advanced.changed))
    return advanced.applied


def local_driver_steps() -> int:
    """Carry out the local-process driver's due steps (stop, OS directory, extensions, start),
    and plan the first start of instances that have never had a process (a new set, a scale
    out). Returns how many instances changed."""
    from fleet.drivers.local import driver as local

    local.plan_first_starts()
    return sum(len(pks) for pks in local.run_due_steps().values())


def local_driver_probes() -> int:
    """Check and probe the local-process driver's running processes that are due (R-H-2)."""
    from fleet.drivers.local import driver as local

    return sum(len(pks) for pks in local.probe_round().values())


def driver_changed_instances(scale_set_ids: list[int]) -> None:
    """A driver changed instances of these sets (committed): tell whoever waits on them."""
    _steps_applied(scale_set_ids)


def _steps_applied(scale_set_ids: list[int]) -> None:
    if not scale_set_ids:
        return
    for callback in list(_steps_applied_callbacks):
        try:
            callback(scale_set_ids)
        except Exception:  # a listener's failure must not fail the simulator's tick
            log.warning("simulator steps-applied callback %r failed", callback, exc_info=True)
