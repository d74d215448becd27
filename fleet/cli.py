"""What the console's management commands share, fleet's and upgrades' alike: JSON on stdout
with ARM's camelCase names, refusals as CommandError (exit code 1) with one line per problem,
and the look-ups of regions and scale sets by the names operators type. It lives in fleet
because it needs only fleet; upgrades' commands import it from here."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.serializers.json import DjangoJSONEncoder

from fleet.models import Region, ScaleSet


class ConsoleCommand(BaseCommand):
    """A command whose own options may reuse Django's names (`--version V` replaces Django's
    `--version`, which only prints Django's version) and that prints its result as JSON."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def print_json(self, data: Any) -> None:
        self.stdout.write(json.dumps(data, indent=2, cls=DjangoJSONEncoder))


def refusal(error: ValidationError, *, headline: str = "", names: Mapping[str, str] | None = None) -> CommandError:
    """A CommandError listing every message of `error` on its own line after the name of the
    field it is about (`names` maps model field names to what the command calls them)."""
    lines = [headline] if headline else []
    if hasattr(error, "error_dict"):
        for field, messages in error.message_dict.items():
            label = (names or {}).get(field, field)
            lines.extend(message if field == NON_FIELD_ERRORS else f"{label}: {message}" for message in messages)
    else:
        lines.extend(error.messages)
    return CommandError("\n".join(lines))


def regions_named(text: str, *, option: str) -> list[Region]:
    """The regions of a comma-separated list of ARM names (`eastus,westus`), in that order;
    an unknown name is refused by name, so a typo never publishes to fewer regions."""
    names = list(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise CommandError(f"{option}: give at least one region, like eastus or eastus,westus.")
    found = {region.name: region for region in Region.objects.filter(name__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        known = ", ".join(Region.objects.values_list("name", flat=True)) or "none yet"
        raise CommandError(f"{option}: unknown region {', '.join(unknown)} (known regions: {known}).")
    return [found[name] for name in names]


def scale_set_named(*, resource_group: str, name: str, subscription: str | None = None) -> ScaleSet:
    """The scale set `name` in `resource_group` (ARM names are case-insensitive); the
    subscription is needed only when two subscriptions have a set by that name and group."""
    found = ScaleSet.objects.filter(resource_group__iexact=resource_group, name__iexact=name).select_related("region")
    if subscription:
        found = found.filter(subscription_id__iexact=subscription)
    matches = list(found[:10])
    if not matches:
        where = f" in subscription {subscription}" if subscription else ""
        raise CommandError(f"No scale set named {name} in resource group {resource_group}{where}.")
    if len(matches) > 1:
        subscriptions = ", ".join(sorted(s.subscription_id for s in matches))
        raise CommandError(
            f"Several scale sets are named {name} in resource group {resource_group} "
            f"(subscriptions {subscriptions}): give --subscription."
        )
    return matches[0]
