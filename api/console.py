"""The console's own API, beyond ARM (SPEC 7 "Beyond ARM", SPEC 8), under /console/api/.

What ARM has no words for: publishing platform image and extension versions, the simulator's
fault knobs, maintenance on chosen instances, and upgrade runs with their batches and event
log. The conventions are ARM's all the same (arm_view: api-version, bearer or session auth,
the error envelope; reads need a console role, writes the operators role) and keys are
camelCase, so one client speaks to both.

Decisions:
- POST platformImageVersions / extensionVersions answer 201 when they created the version and
  200 when it existed (publishing an image again adds the new locations, as the CLI does).
- `faults` in those bodies sets the version's fault profile in the same transaction; without
  it the profile is left as it is. Every field is validated before anything is written.
- PUT faultProfiles/{target} replaces the whole profile: an absent share is 0 and an absent
  bootSeconds is the simulator's default (201 created, 200 replaced). The target must be an
  image key (`platform:publisher/offer/sku:version`, `gallery:gallery/image:version`,
  `custom:uri`) or an extension key (`publisher.type@version`); the version need not be
  published yet, so faults can be set before a release reaches anyone.
- A scale set's runs list newest first by creation; events list oldest first, both keyset-paged
  by row id through `$skiptoken`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from api import selectors
from api.arm import ArmError, arm_json, arm_view, camel_case
from api.catalog import (
    LARGEST_INTEGER,
    Fields,
    as_string,
    body_object,
    by_method,
    invalid,
    list_body,
    refusal,
    regions_named,
    skiptoken,
)
from api.shapes import run_error
from fleet import audit, services
from fleet.images import ImageRef
from fleet.models import ExtensionVersion, FaultProfile, ImageSource, PlatformImageVersion
from fleet.versions import parse_version
from upgrades.models import InstanceOutcome, Phase, RunEvent, UpgradeBatch, UpgradeRun

NAME_PATTERN = "letters, digits, '.', '-' and '_'"
MOST_LOCATIONS = 100
MOST_INSTANCE_IDS = 1000
LARGEST_INSTANCE_ID = 2**31 - 1


# --- fault profiles ----------------------------------------------------------------------------

_FAULT_FIELDS = {
    "never_healthy_share": "neverHealthyShare",
    "provisioning_failure_share": "provisioningFailureShare",
    "boot_seconds": "bootSeconds",
}


@dataclass(frozen=True)
class Faults:
    """The simulator's knobs for one version, read from a body (types and finiteness here,
    ranges by FaultProfile.full_clean)."""

    never_healthy_share: float
    provisioning_failure_share: float
    boot_seconds: float | None

    @classmethod
    def read(cls, body: Fields) -> Faults:
        return cls(
            never_healthy_share=body.number("neverHealthyShare", default=0.0) or 0.0,
            provisioning_failure_share=body.number("provisioningFailureShare", default=0.0) or 0.0,
            boot_seconds=body.number("bootSeconds", default=None),
        )


def fault_profile_checked(*, target: str, faults: Faults, path: str = "") -> FaultProfile:
    """The profile for `target` with these knobs, validated, not saved (one query). Its errors
    target the body's fields (under `path`, e.g. `faults.neverHealthyShare`)."""
    profile = FaultProfile.objects.filter(target=target).first() or FaultProfile(target=target)
    profile.never_healthy_share = faults.never_healthy_share
    profile.provisioning_failure_share = faults.provisioning_failure_share
    profile.boot_seconds = faults.boot_seconds
    try:
        profile.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        prefix = f"{path}." if path else ""
        raise refusal(error, {field: prefix + name for field, name in _FAULT_FIELDS.items()}) from None
    return profile


def fault_profile_of(target: str) -> FaultProfile | None:
    return FaultProfile.objects.filter(target=target).first()


def platform_image_key(image_version: PlatformImageVersion) -> str:
    name = f"{image_version.publisher}/{image_version.offer}/{image_version.sku}"
    return ImageRef(ImageSource.PLATFORM, name, image_version.version).key


def fault_profile_json(profile: FaultProfile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    return {
        "target": profile.target,
        "neverHealthyShare": profile.never_healthy_share,
        "provisioningFailureShare": profile.provisioning_failure_share,
        "bootSeconds": profile.boot_seconds,
    }


def check_fault_target(target: str) -> None:
    """An image key or an extension key with a version (see the module docstring), or 400."""
    if len(target) > 400:
        raise invalid("target", "A fault profile target is at most 400 characters.")
    if _is_image_key(target) or _is_extension_key(target):
        return
    raise invalid(
        "target",
        f"'{target}' is neither an image key (platform:publisher/offer/sku:version, gallery:gallery/image:version, "
        "custom:uri) nor an extension key (publisher.type@version).",
    )


def _parses(version: str) -> bool:
    try:
        parse_version(version)
    except ValidationError:
        return False
    return True


_IMAGE_NAME_PARTS = {ImageSource.PLATFORM.value: 3, ImageSource.GALLERY.value: 2}  # publisher/offer/sku, gallery/image


def _is_image_key(target: str) -> bool:
    source, _, rest = target.partition(":")
    if source == ImageSource.CUSTOM:
        return bool(rest)
    parts = _IMAGE_NAME_PARTS.get(source)
    image = ImageRef.from_key(target)
    names = image.name.split("/")
    return parts is not None and len(names) == parts and all(names) and _parses(image.version)


def _is_extension_key(target: str) -> bool:
    name, at, version = target.rpartition("@")
    return bool(at) and "." in name.strip(".") and ":" not in name and _parses(version)


@arm_view(write=False)
def fault_profile_read(request: HttpRequest, target: str) -> HttpResponse:
    profile = FaultProfile.objects.filter(target=target).first()
    if profile is None:
        raise ArmError(404, "ResourceNotFound", f"No fault profile for '{target}'.")
    return arm_json(fault_profile_json(profile))


@arm_view(write=True, methods=("GET", "PUT"))
def fault_profile_put(request: HttpRequest, target: str) -> HttpResponse:
    """Replace the simulator's knobs for a version: 201 created, 200 replaced (SPEC 8)."""
    faults = Faults.read(body_object(request))
    check_fault_target(target)
    profile = fault_profile_checked(target=target, faults=faults)
    created = profile.pk is None
    fault_profile_save(profile)
    return arm_json(fault_profile_json(profile), status=201 if created else 200)


def fault_profile_save(profile: FaultProfile) -> None:
    """Write a checked profile, created or replaced by target (safe when two PUTs race)."""
    knobs = {field: getattr(profile, field) for field in _FAULT_FIELDS}
    with transaction.atomic():
        FaultProfile.objects.update_or_create(target=profile.target, defaults=knobs)
        audit.record(
            "fault_profile.save",
            f"Set the simulator's faults for {profile.target}",
            details={field: str(value) for field, value in knobs.items()},
        )


fault_profile_view = by_method(read=fault_profile_read, write=fault_profile_put)


# --- publishing versions -----------------------------------------------------------------------


def _name(body: Fields, field: str) -> str:
    """A catalog name: one URL path segment of an ARM id, and a part of an image key."""
    value = body.string(field)
    if not all(c.isalnum() or c in "._-" for c in value):
        raise invalid(body.at(field), f"'{field}' may hold only {NAME_PATTERN} (got '{value}').")
    return value


def _version(body: Fields) -> str:
    return body.string("version", max_length=64)


def _faults(body: Fields) -> Faults | None:
    return Faults.read(body.object("faults")) if body.has("faults") else None


def _locations(body: Fields) -> list[tuple[str, str]]:
    items = body.array("locations", max_items=MOST_LOCATIONS)
    if items is None:
        raise invalid("locations", "'locations' is required: the regions to publish in, like [\"eastus\"].")
    return [(f"locations[{i}]", as_string(item, f"locations[{i}]", max_length=40)) for i, item in enumerate(items)]


def platform_image_json(image_version: PlatformImageVersion, profile: FaultProfile | None) -> dict[str, Any]:
    """What `publish_image` prints (SPEC 7: the CLI prints the API's JSON), with the faults."""
    publications = image_version.publications.select_related("region").order_by("region__name")
    return {
        "publisher": image_version.publisher,
        "offer": image_version.offer,
        "sku": image_version.sku,
        "version": image_version.version,
        "publishedIn": [{"location": p.region.name, "publishedAt": p.published_at} for p in publications],
        "faults": fault_profile_json(profile),
    }


@arm_view(write=True, methods=("POST",))
def platform_image_version_publish(request: HttpRequest) -> HttpResponse:
    """Publish a platform image version in locations, with its fault knobs if given."""
    body = body_object(request)
    publisher, offer, sku = _name(body, "publisher"), _name(body, "offer"), _name(body, "sku")
    version, faults, locations = _version(body), _faults(body), _locations(body)
    regions = regions_named(locations)
    key = ImageRef(ImageSource.PLATFORM, f"{publisher}/{offer}/{sku}", version).key
    profile = fault_profile_checked(target=key, faults=faults, path="faults") if faults else None
    existed = PlatformImageVersion.objects.filter(publisher=publisher, offer=offer, sku=sku, version=version).exists()
    with transaction.atomic():
        try:
            image_version = services.platform_image_publish(
                publisher=publisher, offer=offer, sku=sku, version=version, regions=regions
            )
        except ValidationError as error:
            raise refusal(error, {}) from None
        if profile is not None:
            fault_profile_save(profile)
    return arm_json(platform_image_json(image_version, fault_profile_of(key)), status=200 if existed else 201)


def extension_version_json(release: ExtensionVersion, profile: FaultProfile | None) -> dict[str, Any]:
    """What `publish_extension_version` prints, with the key fault profiles use and the faults."""
    return {
        "publisher": release.publisher,
        "type": release.type,
        "version": release.version,
        "publishedAt": release.published_at,
        "key": release.key,
        "faults": fault_profile_json(profile),
    }


@arm_view(write=True, methods=("POST",))
def extension_version_publish(request: HttpRequest) -> HttpResponse:
    """Release an extension version (R-EXT-1), with its fault knobs if given."""
    body = body_object(request)
    publisher, type_, version, faults = _name(body, "publisher"), _name(body, "type"), _version(body), _faults(body)
    key = ExtensionVersion(publisher=publisher, type=type_, version=version).key
    profile = fault_profile_checked(target=key, faults=faults, path="faults") if faults else None
    existed = ExtensionVersion.objects.filter(publisher=publisher, type=type_, version=version).exists()
    with transaction.atomic():
        try:
            release = services.extension_version_publish(publisher=publisher, type=type_, version=version)
        except ValidationError as error:
            raise refusal(error, {}) from None
        if profile is not None:
            fault_profile_save(profile)
    return arm_json(extension_version_json(release, fault_profile_of(key)), status=200 if existed else 201)


# --- maintenance ---------------------------------------------------------------------------------


def _instance_ids(body: Fields) -> list[int | str] | str:
    """'*' or a list of instance ids (numbers or numeric strings); the service names unknown ones."""
    raw = body.required("instanceIds")
    if raw == "*":
        return "*"
    items = body.array("instanceIds", max_items=MOST_INSTANCE_IDS)
    if items is None:
        raise invalid("instanceIds", "'instanceIds' is required.")
    for index, item in enumerate(items):
        path = f"instanceIds[{index}]"
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise invalid(path, f'\'{path}\' must be an instance id like "3" (or "*" for all).')
        if str(item).isascii() and str(item).isdigit() and int(item) > LARGEST_INSTANCE_ID:
            raise invalid(path, f"'{path}': {item} is not an instance id.")
    return list(items)


@arm_view(write=True, methods=("POST",))
def maintenance_set(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """Start or end maintenance on instances: the simulator makes them unhealthy until it ends."""
    body = body_object(request)
    instance_ids, on = _instance_ids(body), body.boolean("on")
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    try:
        instances = services.instances_set_maintenance(scale_set=scale_set, instance_ids=instance_ids, on=on)
    except ValidationError as error:
        raise refusal(error, {"instance_ids": "instanceIds"}) from None
    ids = sorted(instance.instance_id for instance in instances)
    return arm_json({"instanceIds": [str(i) for i in ids], "underMaintenance": on})


# --- runs --------------------------------------------------------------------------------------


def run_json(run: UpgradeRun) -> dict[str, Any]:
    """A run without its batches (lists); `run.scale_set` and `run.actor` are selected."""
    return {
        "id": run.pk,
        "scaleSet": {"id": run.scale_set.resource_id, "name": run.scale_set.name},
        "kind": run.kind,
        "status": run.status,
        "phase": run.phase,
        "phaseDescription": Phase(run.phase).label,
        "startedBy": run.started_by,
        "actor": run.actor.get_username() if run.actor else None,
        "startedAt": run.started_at,
        "endedAt": run.ended_at,
        "lastAction": run.last_action,
        "lastActionAt": run.last_action_at,
        "cancelRequested": run.cancel_requested,
        "target": {
            "image": run.target_image or None,
            "modelVersion": run.target_model_version,
            "extensions": run.target_extensions,
            "label": run.target_label,
        },
        "policy": {camel_case(field): value for field, value in run.policy.items()},
        "batchCount": run.batch_count,
        "currentBatch": run.current_batch,
        "counts": {
            "successful": run.successful_count,
            "failed": run.failed_count,
            "inProgress": run.in_progress_count,
            "pending": run.pending_count,
            "skipped": run.skipped_count,
            "rolledBack": run.rolled_back_count,
            "rollbackFailed": run.rollback_failed_count,
        },
        "rollbackError": run.rollback_error or None,
        "error": run_error(run),
    }


def batch_json(batch: UpgradeBatch, instance_ids: list[int]) -> dict[str, Any]:
    return {
        "index": batch.index,
        "status": batch.status,
        "updateDomain": batch.update_domain,
        "zone": batch.zone or None,
        "size": batch.size,
        "instanceIds": [str(i) for i in instance_ids],
        "startedAt": batch.started_at,
        "upgradedAt": batch.upgraded_at,
        "endedAt": batch.ended_at,
    }


def event_json(event: RunEvent) -> dict[str, Any]:
    body: dict[str, Any] = {"id": event.pk, "at": event.at, "batchIndex": event.batch_index}
    if event.instance_id_number is not None:
        body["instanceId"] = str(event.instance_id_number)
    body.update(fromState=event.from_state or None, toState=event.to_state, message=event.message)
    return body


def run_get(run_id: str) -> UpgradeRun:
    """The run with its set and actor (one query), or 404."""
    found = (
        UpgradeRun.objects.select_related("scale_set", "actor").filter(pk=int(run_id)).first()
        if run_id.isascii() and run_id.isdigit() and int(run_id) <= LARGEST_INTEGER
        else None
    )
    if found is None:
        raise ArmError(404, "ResourceNotFound", f"No upgrade run {run_id}.")
    return found


def batches_of(run: UpgradeRun) -> list[tuple[UpgradeBatch, list[int]]]:
    """The run's batches in order with their instances' ids (two queries)."""
    members: dict[int, list[int]] = {}
    outcomes = InstanceOutcome.objects.filter(run=run, batch__isnull=False).order_by("instance_id_number")
    for batch_id, instance_id in outcomes.values_list("batch_id", "instance_id_number"):
        members.setdefault(batch_id, []).append(instance_id)
    return [(batch, members.get(batch.pk, [])) for batch in UpgradeBatch.objects.filter(run=run).order_by("index")]


@arm_view(write=False)
def run_detail(request: HttpRequest, run_id: str) -> HttpResponse:
    """A run with its batches (three queries)."""
    run = run_get(run_id)
    body = run_json(run)
    body["batches"] = [batch_json(batch, ids) for batch, ids in batches_of(run)]
    return arm_json(body)


@arm_view(write=False)
def run_events(request: HttpRequest, run_id: str) -> HttpResponse:
    """The run's event log, oldest first, keyset-paged ({value, nextLink}; two queries)."""
    run = run_get(run_id)
    page = selectors.keyset_page(
        RunEvent.objects.filter(run=run), key="pk", after=skiptoken(request), size=settings.API_PAGE_SIZE
    )
    return list_body(request, [event_json(event) for event in page.rows], page.next_after)


def newest_first_page(queryset: QuerySet[UpgradeRun], *, before: int | None, size: int) -> selectors.Page:
    """keyset_page the other way round: rows by descending pk, before the given key."""
    if before is not None:
        queryset = queryset.filter(pk__lt=before)
    rows = list(queryset.order_by("-pk")[: size + 1])
    if len(rows) > size:
        return selectors.Page(rows[:size], rows[size - 1].pk)
    return selectors.Page(rows, None)


@arm_view(write=False)
def scale_set_runs(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """The set's runs, newest first, keyset-paged ({value, nextLink}; two queries)."""
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    runs = UpgradeRun.objects.filter(scale_set=scale_set).select_related("actor")
    page = newest_first_page(runs, before=skiptoken(request), size=settings.API_PAGE_SIZE)
    for run in page.rows:
        run.scale_set = scale_set  # no query per run
    return list_body(request, [run_json(run) for run in page.rows], page.next_after)
