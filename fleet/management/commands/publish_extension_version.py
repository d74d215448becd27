from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from api.console import extension_version_json, fault_profile_of
from fleet import services
from fleet.cli import ConsoleCommand, refusal


class Command(ConsoleCommand):
    help = (
        "Release a version of a VM extension (publisher.type). Sets whose extension has "
        "enableAutomaticUpgrade get it through an availability-first rollout. Releasing it again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--publisher", required=True, help="e.g. Microsoft.ManagedServices")
        parser.add_argument("--type", required=True, help="e.g. ApplicationHealthLinux")
        parser.add_argument("--version", required=True, help="e.g. 2.1")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            release = services.extension_version_publish(
                publisher=options["publisher"], type=options["type"], version=options["version"]
            )
        except ValidationError as error:
            raise refusal(error, headline="The extension version was not released:") from None
        # The API's JSON (SPEC 7): the same as POST /console/api/extensionVersions answers.
        self.print_json(extension_version_json(release, fault_profile_of(release.key)))
