from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from api.console import fault_profile_of, platform_image_json, platform_image_key
from fleet import services
from fleet.cli import ConsoleCommand, refusal, regions_named


class Command(ConsoleCommand):
    help = (
        "Publish a platform image version in regions. Publishing it again in more regions adds them; "
        "a region it is already in keeps its first publication time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--publisher", required=True, help="e.g. Canonical")
        parser.add_argument("--offer", required=True, help="e.g. UbuntuServer")
        parser.add_argument("--sku", required=True, help="e.g. 18.04-LTS")
        parser.add_argument("--version", required=True, help="e.g. 18.04.202402020 (never 'latest')")
        parser.add_argument("--regions", required=True, help="ARM region names, comma-separated: eastus,westus")

    def handle(self, *args: Any, **options: Any) -> None:
        regions = regions_named(options["regions"], option="--regions")
        try:
            image_version = services.platform_image_publish(
                publisher=options["publisher"],
                offer=options["offer"],
                sku=options["sku"],
                version=options["version"],
                regions=regions,
            )
        except ValidationError as error:
            raise refusal(error, headline="The image version was not published:") from None
        # The API's JSON (SPEC 7): the same as POST /console/api/platformImageVersions answers.
        self.print_json(platform_image_json(image_version, fault_profile_of(platform_image_key(image_version))))
