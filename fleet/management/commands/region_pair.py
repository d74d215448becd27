from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from fleet import services
from fleet.cli import ConsoleCommand, refusal, regions_named
from fleet.models import Region


class Command(ConsoleCommand):
    help = (
        "Make two regions each other's geo pair (a region's old partner is unpaired), or unpair a region "
        "with --none. Paired regions are never upgraded in the same phase of a rollout."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--region", required=True, help="ARM region name, e.g. eastus")
        partner = parser.add_mutually_exclusive_group(required=True)
        partner.add_argument("--partner", help="ARM name of its geo pair, e.g. westus")
        partner.add_argument("--none", action="store_true", help="Leave the region without a geo pair")

    def handle(self, *args: Any, **options: Any) -> None:
        region = _one(options["region"], "--region")
        partner = None if options["none"] else _one(options["partner"], "--partner")
        # Every region whose pairing changes is shown: the two, and the partners they leave.
        touched = {r.pk for r in (region, partner) if r is not None}
        touched |= {r.geo_pair_id for r in (region, partner) if r is not None and r.geo_pair_id is not None}
        try:
            services.region_pair(region=region, partner=partner)
        except ValidationError as error:
            raise refusal(error, headline="The regions were not paired:") from None
        self.print_json([region_json(r) for r in Region.objects.filter(pk__in=touched).select_related("geo_pair")])


def _one(text: str, option: str) -> Region:
    regions = regions_named(text, option=option)
    if len(regions) > 1:
        raise CommandError(f"{option}: give one region, not {len(regions)}.")
    return regions[0]


def region_json(region: Region) -> dict[str, Any]:
    """A region as ARM lists locations (name, displayName, metadata.pairedRegion)."""
    paired = [{"name": region.geo_pair.name}] if region.geo_pair else []
    return {
        "name": region.name,
        "displayName": region.display_name,
        "availabilityZones": region.zones,
        "metadata": {"pairedRegion": paired},
    }
