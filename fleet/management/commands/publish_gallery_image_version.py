import math
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from api.catalog import gallery_image_version, gallery_image_version_get
from fleet import services
from fleet.cli import ConsoleCommand, refusal, regions_named
from fleet.models import Gallery, GalleryImage


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
        # The API's JSON (SPEC 7): the same as GET …/galleries/{g}/images/{i}/versions/{v} answers.
        read = gallery_image_version_get(image=version.image, name=version.name)
        assert read is not None  # just made
        self.print_json(gallery_image_version(read, version.image))


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
