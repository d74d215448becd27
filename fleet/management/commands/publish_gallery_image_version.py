import math
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from fleet import services
from fleet.cli import ConsoleCommand, refusal, regions_named
from fleet.models import Gallery, GalleryImage, GalleryImageVersion, ReplicationState


class Command(ConsoleCommand):
    help = (
        "Create a Compute Gallery image version replicated to target regions. It becomes 'latest' "
        "in a region once replication there completes, unless excluded from latest."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--gallery", required=True, help="Gallery name")
        parser.add_argument("--resource-group", "-g", help="The gallery's resource group, if the name is not unique")
        parser.add_argument("--image", required=True, help="Image definition name in the gallery")
        parser.add_argument("--version", required=True, help="Major.Minor.Patch, e.g. 1.1.0")
        parser.add_argument("--target-regions", required=True, help="ARM region names, comma-separated")
        parser.add_argument("--exclude-from-latest", action="store_true", help="Never resolve 'latest' to it")
        parser.add_argument(
            "--replication-seconds",
            type=float,
            default=0.0,
            help="Simulated seconds until each replica completes (default 0: at once)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seconds = options["replication_seconds"]
        if not math.isfinite(seconds) or seconds < 0:
            raise CommandError(f"--replication-seconds: {seconds} is not a number of seconds of 0 or more.")
        image = _image(options["gallery"], options["image"], options["resource_group"])
        regions = regions_named(options["target_regions"], option="--target-regions")
        try:
            version = services.gallery_image_version_publish(
                image=image,
                name=options["version"],
                target_regions=regions,
                exclude_from_latest=options["exclude_from_latest"],
                replication_seconds=seconds,
            )
        except ValidationError as error:
            raise refusal(
                error,
                headline="The gallery image version was not created:",
                names={"name": "version", "target_regions": "targetRegions"},
            ) from None
        self.print_json(gallery_image_version_json(version))


def _image(gallery_name: str, image_name: str, resource_group: str | None) -> GalleryImage:
    galleries = Gallery.objects.filter(name__iexact=gallery_name).select_related("region")
    if resource_group:
        galleries = galleries.filter(resource_group__iexact=resource_group)
    found = list(galleries[:10])
    if not found:
        where = f" in resource group {resource_group}" if resource_group else ""
        raise CommandError(f"No gallery named {gallery_name}{where}.")
    if len(found) > 1:
        groups = ", ".join(sorted(f"{g.subscription_id}/{g.resource_group}" for g in found))
        raise CommandError(f"Several galleries are named {gallery_name} ({groups}): give --resource-group.")
    gallery = found[0]
    image = gallery.images.filter(name__iexact=image_name).select_related("gallery").first()
    if image is None:
        names = ", ".join(gallery.images.order_by("name").values_list("name", flat=True)) or "none yet"
        raise CommandError(f"Gallery {gallery.name} has no image definition {image_name} (its images: {names}).")
    return image


def gallery_image_version_json(version: GalleryImageVersion) -> dict[str, Any]:
    """The ARM shape of a gallery image version (publishingProfile and replicationStatus)."""
    replicas = list(version.replicas.select_related("region").order_by("region__name"))
    done = all(r.state == ReplicationState.COMPLETED for r in replicas)
    gallery = version.image.gallery
    return {
        "id": f"{version.image.resource_id}/versions/{version.name}",
        "name": version.name,
        "type": "Microsoft.Compute/galleries/images/versions",
        "location": gallery.region.name,
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
