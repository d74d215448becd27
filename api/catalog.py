"""The image catalog and gallery image versions over ARM (SPEC 7), and the strict JSON-body
reader every write of this module and of api.console uses.

Image catalog (read): `az vm image list|show` walks publishers → offers → skus → versions in a
location. Only versions with an ImagePublication in that location, published by now, count
(the same rule 'latest' resolves by). Lists are bare JSON arrays of {name, location, id}, ids
spelled as Azure spells them (`/Subscriptions/…/Providers/Microsoft.Compute/Locations/…`).
Names match case-insensitively, as ARM's do. Decisions:
- an unknown location answers 404 `LocationNotAvailableForResourceType` (Azure's code for a
  location a resource type is not in, with the known locations in the message); an unknown
  publisher, offer, SKU or version answers 404 `NotFound` ("Artifact: VMImage was not found.",
  Azure's words) naming what was asked for.
- versions list in version order, ascending; `$orderby=name desc` reverses it and `$top=N`
  keeps the first N, as VirtualMachineImages.list does.
- a VirtualMachineImage's operating system is not stored for platform images: it is Windows
  when the publisher's name says so (MicrosoftWindowsServer, MicrosoftWindowsDesktop, …) and
  Linux otherwise; automaticOSUpgradeSupported comes from the supported OS SKU table (R-AUTO-1).

Gallery image versions (PUT/GET): a PUT creates the version through
fleet.services.gallery_image_version_publish (201). Decisions:
- a re-PUT with the same target regions and excludeFromLatest answers 200 with the version as
  it is (idempotent, as clients retry PUTs); a re-PUT that changes either is refused with 409
  `PropertyChangeNotAllowed` rather than silently ignored or half applied: the console has no
  service that changes a published version's replication, and refusing loses nothing.
- `properties.publishingProfile.replicationSeconds` (not ARM; default 0) is how many simulated
  seconds replication to each target region takes; used on create only.
- `targetRegions` defaults to the gallery's own region, as on Azure; `regionalReplicaCount`
  may only be 1 (the simulator keeps one replica per region and says so rather than pretend).
- `location` must be the gallery's region (resources in a gallery live in its region).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from api import selectors
from api.arm import ArmError, View, arm_json, arm_view, camel_case, json_body, resource_not_found
from fleet import clock, services
from fleet.models import (
    Gallery,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    ImagePublication,
    Region,
    ReplicationState,
    SupportedOsSku,
)

# --- reading JSON bodies ---------------------------------------------------------------------

ROOT = "$"  # the target of a refusal about the whole body (a JSON path's root)
LARGEST_INTEGER = 2**53  # past this a JSON number is not an exact integer, nor a sane knob value


def invalid(target: str, message: str) -> ArmError:
    return ArmError(400, "InvalidParameter", message, target=target)


def body_object(request: HttpRequest) -> Fields:
    """The request body, which must be a JSON object; anything else is a 400 with target `$`."""
    data = json_body(request)
    if not isinstance(data, dict):
        raise ArmError(
            400, "InvalidRequestContent", f"The request content must be a JSON object, not {_kind(data)}.", target=ROOT
        )
    return Fields(data)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass(frozen=True)
class Fields:
    """A JSON object read field by field. Every refusal is a 400 whose target is the field's
    JSON path (`properties.publishingProfile.targetRegions[1].name`); null counts as absent."""

    data: dict[str, Any]
    path: str = ""

    def at(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def required(self, name: str) -> Any:
        if not self.has(name):
            raise invalid(self.at(name), f"'{self.at(name)}' is required.")
        return self.data[name]

    def object(self, name: str, *, required: bool = False) -> Fields:
        value = self.required(name) if required else self.data.get(name)
        if value is None:
            return Fields({}, self.at(name))
        return as_object(value, self.at(name))

    def string(self, name: str, *, max_length: int = 100) -> str:
        return as_string(self.required(name), self.at(name), max_length=max_length)

    def boolean(self, name: str, *, default: bool | None = None) -> bool:
        if default is not None and not self.has(name):
            return default
        value = self.required(name)
        if not isinstance(value, bool):
            raise invalid(self.at(name), f"'{self.at(name)}' must be true or false, not {_kind(value)}.")
        return value

    def number(
        self, name: str, *, low: float | None = None, high: float | None = None, default: float | None
    ) -> float | None:
        """A finite JSON number, within [low, high] if given (booleans and strings are refused)."""
        if not self.has(name):
            return default
        return as_number(self.data[name], self.at(name), low=low, high=high)

    def array(self, name: str, *, max_items: int) -> list[Any] | None:
        if not self.has(name):
            return None
        value = self.data[name]
        if not isinstance(value, list):
            raise invalid(self.at(name), f"'{self.at(name)}' must be an array, not {_kind(value)}.")
        if not value:
            raise invalid(self.at(name), f"'{self.at(name)}' must not be empty.")
        if len(value) > max_items:
            raise invalid(self.at(name), f"'{self.at(name)}' has more than {max_items} items.")
        return value


def as_object(value: Any, path: str) -> Fields:
    if not isinstance(value, dict):
        raise invalid(path, f"'{path}' must be an object, not {_kind(value)}.")
    return Fields(value, path)


def as_string(value: Any, path: str, *, max_length: int = 100) -> str:
    if not isinstance(value, str):
        raise invalid(path, f"'{path}' must be a string, not {_kind(value)}.")
    if not value.strip():
        raise invalid(path, f"'{path}' must not be empty.")
    if len(value) > max_length:
        raise invalid(path, f"'{path}' is longer than {max_length} characters.")
    return value


def as_number(value: Any, path: str, *, low: float | None = None, high: float | None = None) -> float:
    """A finite JSON number. Without bounds, its magnitude is still bounded, so that turning
    it into a float (and a model's validators) never overflow."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(path, f"'{path}' must be a number, not {_kind(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise invalid(path, f"'{path}' must be a finite number.")
    if low is not None and high is not None:
        if not low <= value <= high:
            raise invalid(path, f"'{path}' must be from {low:g} to {high:g} (got {value:.6g}).")
    elif abs(value) > LARGEST_INTEGER:
        raise invalid(path, f"'{path}' is far out of range.")
    return float(value)


def refusal(error: ValidationError, targets: dict[str, str]) -> ArmError:
    """A service's ValidationError as a 400 whose targets are the body's JSON paths
    (`targets` maps model field names to them; other fields are camelCased; errors about no
    one field target the whole body)."""
    messages = error.message_dict if hasattr(error, "error_dict") else {NON_FIELD_ERRORS: error.messages}
    details = [
        {"code": "InvalidParameter", "target": _target(field, targets), "message": message}
        for field, field_messages in messages.items()
        for message in field_messages
    ]
    if len(details) == 1:
        return ArmError(400, "InvalidParameter", details[0]["message"], target=details[0]["target"])
    return ArmError(400, "InvalidParameter", "Several parameters are invalid; see details.", details=details)


def _target(field: str, targets: dict[str, str]) -> str:
    if field == NON_FIELD_ERRORS:
        return ROOT
    return targets.get(field) or camel_case(field)


def regions_named(names: list[tuple[str, str]]) -> list[Region]:
    """The regions of (JSON path, name) pairs, case-insensitively, in order and without
    repeats; an unknown name is refused at its path (one query)."""
    known = {region.name.lower(): region for region in Region.objects.all()}
    found: dict[str, Region] = {}
    for path, name in names:
        region = known.get(name.lower())
        if region is None:
            listed = ", ".join(sorted(known)) or "none yet"
            raise invalid(path, f"Unknown location '{name}' (known locations: {listed}).")
        found.setdefault(region.name, region)
    return list(found.values())


def list_body(request: HttpRequest, value: list[Any], next_after: int | None) -> HttpResponse:
    """ARM's list envelope; nextLink is absolute and keeps the caller's api-version."""
    body: dict[str, Any] = {"value": value}
    if next_after is not None:
        query = urlencode({"api-version": request.GET["api-version"], "$skiptoken": str(next_after)}, safe="$")
        body["nextLink"] = request.build_absolute_uri(f"{request.path}?{query}")
    return arm_json(body)


def skiptoken(request: HttpRequest) -> int | None:
    """The $skiptoken of a keyset-paged list, bounded so the database never sees a number too
    large for its integers."""
    after = selectors.parse_skiptoken(request.GET.get("$skiptoken"))
    if after is not None and after > LARGEST_INTEGER:
        raise invalid("$skiptoken", "The $skiptoken is not one this API issued; follow nextLink as given.")
    return after


def by_method(*, read: View, write: View) -> View:
    """One URL, a view per method (reads and writes need different roles). Every other
    method goes to the write view, whose arm_view answers 405 with Allow."""

    @csrf_exempt
    @login_not_required
    def dispatch(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        view = read if request.method == "GET" else write
        return view(request, *args, **kwargs)

    return dispatch


# --- the image catalog -------------------------------------------------------------------------

VMIMAGE_NOT_FOUND = "Artifact: VMImage was not found"
LARGEST_TOP = 100_000
WINDOWS_PUBLISHER_MARK = "windows"
LEVELS = ("publisher", "offer", "sku", "version")
SEGMENTS = ("Publishers", "Offers", "Skus", "Versions")  # a catalog id's segment per level


@dataclass(frozen=True)
class CatalogEntry:
    """A publisher, offer, SKU or version in a location: its names from the publisher down,
    as stored (the request's spelling may differ in case)."""

    names: tuple[str, ...]
    location: str

    def as_json(self, subscription_id: str) -> dict[str, str]:
        return {"name": self.names[-1], "location": self.location, "id": self.resource_id(subscription_id)}

    def resource_id(self, subscription_id: str) -> str:
        path = f"/Subscriptions/{subscription_id}/Providers/Microsoft.Compute/Locations/{self.location}"
        for level, name in enumerate(self.names):
            if level == 1:
                path += "/ArtifactTypes/VMImage"
            path += f"/{SEGMENTS[level]}/{name}"
        return path


def _published(location: str, **names: str) -> QuerySet[ImagePublication]:
    """Publications in `location` that are out by now (the rule 'latest' resolves by),
    narrowed case-insensitively by publisher, offer and sku."""
    rows = ImagePublication.objects.filter(region__name__iexact=location, published_at__lte=clock.now())
    return rows.filter(**{f"image_version__{field}__iexact": value for field, value in names.items()})


def _entries(rows: QuerySet[ImagePublication], level: str, *, order_by: str = "") -> list[CatalogEntry]:
    """Distinct entries at `level` (publisher … version), without case-insensitive repeats,
    ordered by name or by `order_by` (one query)."""
    depth = LEVELS.index(level) + 1
    columns = [f"image_version__{field}" for field in LEVELS[:depth]]
    query = rows.values_list(*columns, "region__name").order_by(order_by or columns[-1])
    found: dict[tuple[str, ...], CatalogEntry] = {}
    for row in query.distinct() if not order_by else query:
        names = tuple(row[:depth])
        found.setdefault(tuple(name.lower() for name in names), CatalogEntry(names, row[depth]))
    return list(found.values())


def _missing(location: str, what: str) -> ArmError:
    """Why a catalog read found nothing: the location is unknown, or `what` is not there."""
    regions = list(Region.objects.order_by("name").values_list("name", flat=True))
    if location.lower() not in {name.lower() for name in regions}:
        return ArmError(
            404,
            "LocationNotAvailableForResourceType",
            f"The provided location '{location}' is not available for resource type "
            f"'Microsoft.Compute/locations/publishers'. List of available regions for the resource type is "
            f"'{','.join(regions)}'.",
        )
    return ArmError(404, "NotFound", f"{VMIMAGE_NOT_FOUND}: {what} in location '{location}'.")


def _listed(entries: list[CatalogEntry], subscription_id: str) -> HttpResponse:
    return arm_json([entry.as_json(subscription_id) for entry in entries])


@arm_view(write=False)
def publisher_list(request: HttpRequest, subscription_id: str, location: str) -> HttpResponse:
    entries = _entries(_published(location), "publisher")
    if not entries and (missing := _missing(location, "no image is published")).code != "NotFound":
        raise missing  # a known location with nothing published lists nothing
    return _listed(entries, subscription_id)


@arm_view(write=False)
def offer_list(request: HttpRequest, subscription_id: str, location: str, publisher: str) -> HttpResponse:
    entries = _entries(_published(location, publisher=publisher), "offer")
    if not entries:
        raise _missing(location, f"no publisher '{publisher}'")
    return _listed(entries, subscription_id)


@arm_view(write=False)
def sku_list(request: HttpRequest, subscription_id: str, location: str, publisher: str, offer: str) -> HttpResponse:
    entries = _entries(_published(location, publisher=publisher, offer=offer), "sku")
    if not entries:
        raise _missing(location, f"no offer '{offer}' of publisher '{publisher}'")
    return _listed(entries, subscription_id)


def _top(request: HttpRequest) -> int | None:
    raw = request.GET.get("$top")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= LARGEST_TOP:
        raise invalid("$top", f"$top must be a whole number from 1 to {LARGEST_TOP} (got '{raw}').")
    return int(raw)


def _descending(request: HttpRequest) -> bool:
    raw = request.GET.get("$orderby")
    if raw is None:
        return False
    words = raw.lower().split()
    if words in (["name"], ["name", "asc"]):
        return False
    if words == ["name", "desc"]:
        return True
    raise invalid("$orderby", f"$orderby can be 'name', 'name asc' or 'name desc' (got '{raw}').")


@arm_view(write=False)
def version_list(
    request: HttpRequest, subscription_id: str, location: str, publisher: str, offer: str, sku: str
) -> HttpResponse:
    """Versions in version order (numerically, part by part), as Azure lists them."""
    top, descending = _top(request), _descending(request)
    rows = _published(location, publisher=publisher, offer=offer, sku=sku)
    order = "-image_version__sort_key" if descending else "image_version__sort_key"
    entries = _entries(rows, "version", order_by=order)
    if not entries:
        raise _missing(location, f"no SKU '{sku}' of offer '{offer}' of publisher '{publisher}'")
    return _listed(entries[:top], subscription_id)


@arm_view(write=False)
def version_get(
    request: HttpRequest, subscription_id: str, location: str, publisher: str, offer: str, sku: str, version: str
) -> HttpResponse:
    """VirtualMachineImage (two queries: the publication, the supported OS SKU table)."""
    rows = _published(location, publisher=publisher, offer=offer, sku=sku).filter(image_version__version=version)
    entries = _entries(rows, "version")
    if not entries:
        raise _missing(location, f"no version '{version}' of {publisher}/{offer}/{sku}")
    return arm_json(virtual_machine_image(entries[0], subscription_id))


def virtual_machine_image(entry: CatalogEntry, subscription_id: str) -> dict[str, Any]:
    """VirtualMachineImage: only what the console knows (no plan, data disks or features)."""
    publisher, offer, sku, _ = entry.names
    windows = WINDOWS_PUBLISHER_MARK in publisher.lower()
    supported = SupportedOsSku.objects.filter(publisher__iexact=publisher, offer__iexact=offer, sku__iexact=sku)
    return {
        **entry.as_json(subscription_id),
        "properties": {
            "osDiskImage": {"operatingSystem": "Windows" if windows else "Linux"},
            "dataDiskImages": [],
            "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": supported.exists()},
        },
    }


# --- gallery image versions ------------------------------------------------------------------

GALLERY_IMAGE_VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"
PUBLISHING_PROFILE = "properties.publishingProfile"
TARGET_REGIONS = f"{PUBLISHING_PROFILE}.targetRegions"
LONGEST_REPLICATION_SECONDS = 86_400.0  # one simulated day; past it a typo, not a plan
MOST_TARGET_REGIONS = 100


def gallery_image_get(*, subscription_id: str, resource_group: str, gallery: str, image: str) -> GalleryImage:
    """The image definition, names matched case-insensitively; 404 naming the gallery or the
    image, whichever is missing (one query when found)."""
    galleries = Gallery.objects.filter(
        subscription_id__iexact=subscription_id, resource_group__iexact=resource_group, name__iexact=gallery
    )
    found = GalleryImage.objects.select_related("gallery__region").filter(gallery__in=galleries, name__iexact=image)
    if (definition := found.first()) is not None:
        return definition
    if galleries.exists():
        raise resource_not_found("Microsoft.Compute/galleries/images", f"{gallery}/{image}", resource_group)
    raise resource_not_found("Microsoft.Compute/galleries", gallery, resource_group)


def _versions(image: GalleryImage) -> QuerySet[GalleryImageVersion]:
    replicas = GalleryImageReplica.objects.select_related("region").order_by("region__name")
    return GalleryImageVersion.objects.filter(image=image).prefetch_related(Prefetch("replicas", queryset=replicas))


def gallery_image_version_get(*, image: GalleryImage, name: str) -> GalleryImageVersion | None:
    """The version with its replicas (two queries)."""
    return _versions(image).filter(name=name).first()


def gallery_image_version(version: GalleryImageVersion, image: GalleryImage) -> dict[str, Any]:
    """GalleryImageVersion, as `publish_gallery_image_version` prints it (SPEC 7: the CLI prints
    the API's JSON). `version.replicas` is prefetched, ordered by region name."""
    replicas = list(version.replicas.all())
    done = all(r.state == ReplicationState.COMPLETED for r in replicas)
    return {
        "id": f"{image.resource_id}/versions/{version.name}",
        "name": version.name,
        "type": GALLERY_IMAGE_VERSION_TYPE,
        "location": image.gallery.region.name,
        "properties": {
            "publishingProfile": {
                "targetRegions": [{"name": r.region.name, "regionalReplicaCount": 1} for r in replicas],
                "excludeFromLatest": version.exclude_from_latest,
                "publishedDate": version.published_at,
            },
            "provisioningState": "Succeeded",
            "replicationStatus": {
                "aggregatedState": "Completed" if done else "InProgress",
                "summary": [
                    {
                        "region": r.region.name,
                        "state": r.state,
                        "progress": 100 if r.state == ReplicationState.COMPLETED else 0,
                    }
                    for r in replicas
                ],
            },
        },
    }


@dataclass(frozen=True)
class VersionRequest:
    """What a PUT of a gallery image version asks for, read and checked (no queries)."""

    location: str
    target_regions: list[tuple[str, str]]  # (JSON path, region name); empty: the gallery's region
    exclude_from_latest: bool
    replication_seconds: float

    @classmethod
    def read(cls, body: Fields) -> VersionRequest:
        location = body.string("location", max_length=40)
        profile = body.object("properties", required=True).object("publishingProfile")
        regions = []
        for index, item in enumerate(profile.array("targetRegions", max_items=MOST_TARGET_REGIONS) or []):
            region = as_object(item, f"{TARGET_REGIONS}[{index}]")
            regions.append((region.at("name"), region.string("name", max_length=40)))
            if region.number("regionalReplicaCount", low=1, high=LARGEST_INTEGER, default=1) != 1:
                raise invalid(
                    region.at("regionalReplicaCount"),
                    "regionalReplicaCount must be 1: the simulator keeps one replica per region.",
                )
        seconds = profile.number("replicationSeconds", low=0, high=LONGEST_REPLICATION_SECONDS, default=0.0)
        return cls(
            location=location,
            target_regions=regions,
            exclude_from_latest=profile.boolean("excludeFromLatest", default=False),
            replication_seconds=seconds or 0.0,
        )


def _target_regions(wanted: VersionRequest, image: GalleryImage) -> list[Region]:
    gallery_region = image.gallery.region
    if wanted.location.lower() != gallery_region.name.lower():
        raise invalid(
            "location",
            f"The location must be the gallery's, '{gallery_region.name}' (got '{wanted.location}').",
        )
    if not wanted.target_regions:
        return [gallery_region]
    return regions_named(wanted.target_regions)


def _unchanged(version: GalleryImageVersion, regions: list[Region], exclude_from_latest: bool) -> None:
    """A re-PUT may repeat the version, not change it (409 PropertyChangeNotAllowed)."""
    current = sorted(r.region.name for r in version.replicas.all())
    if current != sorted(r.name for r in regions):
        raise ArmError(
            409,
            "PropertyChangeNotAllowed",
            f"Changing targetRegions of an existing gallery image version is not supported here "
            f"(it replicates to {', '.join(current)}). Publish a new version instead.",
            target=TARGET_REGIONS,
        )
    if version.exclude_from_latest != exclude_from_latest:
        raise ArmError(
            409,
            "PropertyChangeNotAllowed",
            "Changing excludeFromLatest of an existing gallery image version is not supported here.",
            target=f"{PUBLISHING_PROFILE}.excludeFromLatest",
        )


_VERSION_TARGETS = {
    "name": "name",
    "target_regions": TARGET_REGIONS,
    "exclude_from_latest": f"{PUBLISHING_PROFILE}.excludeFromLatest",
}


def _publish(image: GalleryImage, name: str, regions: list[Region], wanted: VersionRequest) -> bool:
    """Create the version; False when a concurrent PUT created it first."""
    try:
        services.gallery_image_version_publish(
            image=image,
            name=name,
            target_regions=regions,
            exclude_from_latest=wanted.exclude_from_latest,
            replication_seconds=wanted.replication_seconds,
        )
    except IntegrityError:
        return False
    except ValidationError as error:
        if GalleryImageVersion.objects.filter(image=image, name=name).exists():
            return False
        raise refusal(error, _VERSION_TARGETS) from None
    return True


@arm_view(write=True, methods=("GET", "PUT"))
def gallery_image_version_put(
    request: HttpRequest, subscription_id: str, resource_group: str, gallery: str, image: str, version: str
) -> HttpResponse:
    """PUT a gallery image version: 201 created, 200 unchanged, 409 changed (see module docstring)."""
    wanted = VersionRequest.read(body_object(request))
    definition = gallery_image_get(
        subscription_id=subscription_id, resource_group=resource_group, gallery=gallery, image=image
    )
    regions = _target_regions(wanted, definition)
    found = gallery_image_version_get(image=definition, name=version)
    created = found is None and _publish(definition, version, regions, wanted)
    if found is None:
        found = gallery_image_version_get(image=definition, name=version)
        assert found is not None  # created now, by this PUT or a concurrent one
    if not created:
        _unchanged(found, regions, wanted.exclude_from_latest)
    return arm_json(gallery_image_version(found, definition), status=201 if created else 200)


@arm_view(write=False)
def gallery_image_version_read(
    request: HttpRequest, subscription_id: str, resource_group: str, gallery: str, image: str, version: str
) -> HttpResponse:
    definition = gallery_image_get(
        subscription_id=subscription_id, resource_group=resource_group, gallery=gallery, image=image
    )
    found = gallery_image_version_get(image=definition, name=version)
    if found is None:
        raise resource_not_found(GALLERY_IMAGE_VERSION_TYPE, f"{gallery}/{image}/{version}", resource_group)
    return arm_json(gallery_image_version(found, definition))


gallery_image_version_view = by_method(read=gallery_image_version_read, write=gallery_image_version_put)


@arm_view(write=False)
def gallery_image_version_list(
    request: HttpRequest, subscription_id: str, resource_group: str, gallery: str, image: str
) -> HttpResponse:
    """The image's versions, keyset-paged by creation ({value, nextLink}; three queries)."""
    definition = gallery_image_get(
        subscription_id=subscription_id, resource_group=resource_group, gallery=gallery, image=image
    )
    page = selectors.keyset_page(_versions(definition), key="pk", after=skiptoken(request), size=settings.API_PAGE_SIZE)
    return list_body(request, [gallery_image_version(v, definition) for v in page.rows], page.next_after)
