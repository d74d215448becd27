import argparse
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandParser

from fleet.cli import ConsoleCommand, refusal, scale_set_named
from fleet.models import ScaleSet
from upgrades.services import automatic_os_upgrade_set


def _true_or_false(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"'{text}' is not true or false.")
    return lowered == "true"


class Command(ConsoleCommand):
    help = (
        "Turn automatic OS image upgrades on or off for a scale set "
        "(upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade). Turning them on is refused, "
        "with every broken condition on its own line, unless the set meets R-AUTO-1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--resource-group", "-g", required=True)
        parser.add_argument("--name", "-n", required=True, help="Scale set name")
        parser.add_argument("--subscription", help="Only needed when the name is not unique across subscriptions")
        switch = parser.add_mutually_exclusive_group(required=True)
        switch.add_argument("--enable", action="store_true", help="Turn automatic OS upgrades on")
        switch.add_argument("--disable", action="store_true", help="Turn them off (a run in progress goes on)")
        parser.add_argument(
            "--disable-automatic-rollback",
            type=_true_or_false,
            metavar="true|false",
            help="Whether a failed automatic upgrade leaves instances on the new image (default: unchanged)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        scale_set = scale_set_named(
            resource_group=options["resource_group"], name=options["name"], subscription=options["subscription"]
        )
        try:
            saved = automatic_os_upgrade_set(
                scale_set=scale_set,
                enabled=options["enable"],
                disable_automatic_rollback=options["disable_automatic_rollback"],
            )
        except ValidationError as error:
            raise refusal(
                error,
                headline=f"Automatic OS upgrades were not turned on for {scale_set.name}:",
                names={
                    "enable_automatic_os_upgrade": "enableAutomaticOSUpgrade",
                    "disable_automatic_rollback": "disableAutomaticRollback",
                },
            ) from None
        self.print_json(upgrade_policy_json(saved))


def upgrade_policy_json(scale_set: ScaleSet) -> dict[str, Any]:
    """The set with its upgradePolicy, in the ARM shape `az vmss show` prints."""
    return {
        "id": scale_set.resource_id,
        "name": scale_set.name,
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": scale_set.region.name,
        "properties": {
            "upgradePolicy": {
                "mode": scale_set.upgrade_mode,
                "automaticOSUpgradePolicy": {
                    "enableAutomaticOSUpgrade": scale_set.enable_automatic_os_upgrade,
                    "disableAutomaticRollback": scale_set.disable_automatic_rollback,
                    "useRollingUpgradePolicy": scale_set.use_rolling_upgrade_policy,
                    "osRollingUpgradeDeferral": scale_set.os_rolling_upgrade_deferral,
                },
            },
        },
    }
