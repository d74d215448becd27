"""`manage.py vmss …`: the `az vmss` commands of SPEC 7, as a client of the REST API.

Each command builds the request az would send and hands it to the API in-process (api.cli):
what it prints is the API's JSON, and what it refuses is the API's error, by construction.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser

from api import cli
from fleet.cli import ConsoleCommand
from fleet.models import DriverName, UpgradeMode

Options = dict[str, Any]
Handler = Callable[[cli.Client, Options], Any]

# az's action names and the POST each sends (`stop` is ARM's powerOff).
INSTANCE_ACTIONS = {
    "reimage": ("reimage", "Reimage instances: a new OS disk from the model's image, data disks kept"),
    "start": ("start", "Start stopped or deallocated instances"),
    "restart": ("restart", "Restart instances"),
    "stop": ("poweroff", "Power off instances (they stay allocated)"),
    "deallocate": ("deallocate", "Stop and deallocate instances"),
}
# Read-only in ARM's VirtualMachineScaleSetExtension: not sent back.
EXTENSION_READ_ONLY = ("provisioningState",)
# `create --app-health` adds the Application Health extension under this name (as the demo fleet does).
APP_HEALTH_NAME = "HealthExtension"
URN_EXAMPLE = "Canonical:UbuntuServer:18.04-LTS:latest"


# --- argument types ----------------------------------------------------------------------------


def _true_or_false(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"'{text}' is not true or false.")
    return lowered == "true"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}.") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("give a JSON object, like '{\"port\": 80}'.")
    return value


def _one_of(choices: list[str]) -> Callable[[str], str]:
    """A choice matched case-insensitively, as az and ARM match enums, in its canonical spelling."""

    def choose(text: str) -> str:
        for choice in choices:
            if choice.lower() == text.strip().lower():
                return choice
        raise argparse.ArgumentTypeError(f"'{text}' is not one of {', '.join(choices)}.")

    return choose


def _image_urn(text: str) -> dict[str, str]:
    """az's image URN `publisher:offer:sku:version` as an imageReference (version may be latest).
    Whether that image exists is the API's to say."""
    parts = [part.strip() for part in text.split(":")]
    if len(parts) != 4 or not all(parts):
        raise argparse.ArgumentTypeError(
            f"'{text}' is not an image URN: give publisher:offer:sku:version, like {URN_EXAMPLE}."
        )
    publisher, offer, sku, version = parts
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


def _app_health(text: str) -> dict[str, Any]:
    """`PROTOCOL:PORT[:PATH]` as the Application Health extension (R-H-1), as ARM spells it. Only
    the form is checked here: which protocols, ports and paths go together is the API's to say."""
    protocol, _, rest = text.partition(":")
    port, has_path, path = rest.partition(":")
    if not protocol or not port.isascii() or not port.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not PROTOCOL:PORT[:PATH], like http:80:/health or tcp:8080.")
    settings: dict[str, Any] = {"protocol": protocol.strip().lower(), "port": int(port)}
    if has_path:
        settings["requestPath"] = path
    return {
        "name": APP_HEALTH_NAME,
        "properties": {
            "publisher": "Microsoft.ManagedServices",
            "type": "ApplicationHealthLinux",
            "typeHandlerVersion": "2.0",
            "settings": settings,
        },
    }


def _assignment(text: str) -> tuple[str, Any]:
    try:
        return cli.split_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


# --- paths -------------------------------------------------------------------------------------


def _set_path(options: Options) -> str:
    return cli.scale_set_path(
        resource_group=options["resource_group"], name=options["scale_set"], subscription=options["subscription"]
    )


def _instance_ids_body(options: Options) -> dict[str, Any] | None:
    """`{"instanceIds": [...]}`, or no body at all (every instance) when none were given."""
    ids = options.get("instance_ids")
    return {"instanceIds": ids} if ids else None


# --- the commands: each returns what is printed --------------------------------------------------


def scale_set_list(client: cli.Client, options: Options) -> list[Any]:
    """The sets of the subscription (or group) given, else of every subscription the caller sees."""
    subscriptions = (
        [options["subscription"]]
        if options["subscription"]
        else [entry["subscriptionId"] for entry in client.get_all("/subscriptions")]
    )
    return [
        scale_set
        for subscription in subscriptions
        for scale_set in client.get_all(
            cli.scale_sets_path(subscription=subscription, resource_group=options["resource_group"])
        )
    ]


def _subscription_for_new_set(client: cli.Client, options: Options) -> str:
    """--subscription, else the one subscription the caller sees (az's current subscription).
    With none or several there is nothing to guess from: the operator names it."""
    if options["subscription"]:
        return str(options["subscription"])
    seen = [entry["subscriptionId"] for entry in client.get_all("/subscriptions")]
    if len(seen) == 1:
        return str(seen[0])
    if not seen:
        raise CommandError("No subscription holds a scale set yet: give --subscription for the new one.")
    raise CommandError(f"Several subscriptions hold scale sets ({', '.join(seen)}): give --subscription.")


def create(client: cli.Client, options: Options) -> Any:
    """az vmss create: PUT a new set, built from the options as az builds its request.

    A set that exists already is refused rather than PUT over: the same PUT would change its
    model (a new image in Rolling mode starts an upgrade), which is `vmss update`'s job."""
    subscription = _subscription_for_new_set(client, options)
    path = cli.scale_set_path(resource_group=options["resource_group"], name=options["name"], subscription=subscription)
    if client.find(path) is not None:
        raise CommandError(
            f"A scale set named {options['name']} exists already in resource group {options['resource_group']}: "
            "change it with vmss update."
        )
    sku: dict[str, Any] = {"capacity": options["instance_count"]}
    if options["vm_sku"]:
        sku["name"] = options["vm_sku"]
    profile: dict[str, Any] = {"storageProfile": {"imageReference": options["image"]}}
    if options["app_health"] is not None:
        profile["extensionProfile"] = {"extensions": [options["app_health"]]}
    body = {
        "location": options["location"],
        "sku": sku,
        "properties": {
            "upgradePolicy": {"mode": options["upgrade_policy_mode"]},
            "driver": options["driver"],
            "virtualMachineProfile": profile,
        },
    }
    return client.send("PUT", path, body)


def show(client: cli.Client, options: Options) -> Any:
    return client.get(_set_path(options))


def list_instances(client: cli.Client, options: Options) -> list[Any]:
    return client.get_all(f"{_set_path(options)}/virtualMachines")


def get_instance_view(client: cli.Client, options: Options) -> Any:
    instance_id = options["instance_id"]
    suffix = f"/virtualMachines/{cli.segment(instance_id)}/instanceView" if instance_id else "/instanceView"
    return client.get(f"{_set_path(options)}{suffix}")


def rolling_upgrade_start(client: cli.Client, options: Options) -> Any:
    return client.send("POST", f"{_set_path(options)}/osRollingUpgrade")


def rolling_upgrade_cancel(client: cli.Client, options: Options) -> Any:
    return client.send("POST", f"{_set_path(options)}/rollingUpgrades/cancel")


def rolling_upgrade_get_latest(client: cli.Client, options: Options) -> Any:
    return client.get(f"{_set_path(options)}/rollingUpgrades/latest")


def get_os_upgrade_history(client: cli.Client, options: Options) -> list[Any]:
    return client.get_all(f"{_set_path(options)}/osUpgradeHistory")


def update_instances(client: cli.Client, options: Options) -> Any:
    return client.send("POST", f"{_set_path(options)}/manualupgrade", _instance_ids_body(options))


def instance_action(action: str) -> Handler:
    def act(client: cli.Client, options: Options) -> Any:
        return client.send("POST", f"{_set_path(options)}/{action}", _instance_ids_body(options))

    return act


def update(client: cli.Client, options: Options) -> Any:
    """az's generic update: GET the set, apply each --set, PUT it back."""
    path = _set_path(options)
    return client.send("PUT", path, cli.generic_update(client.get(path), options["assignments"]))


def extension_set(client: cli.Client, options: Options) -> Any:
    """PUT the extension. az names it by its type unless --extension-instance-name is given.
    An existing extension keeps what is not given (its version, settings, …): PUT replaces the
    whole extension, and `extension set --enable-auto-upgrade true` must not wipe its settings."""
    name = options["instance_name"] or options["extension"]
    path = f"{_set_path(options)}/extensions/{cli.segment(name)}"
    current = client.find(path) or {}
    properties: dict[str, Any] = {
        key: value for key, value in current.get("properties", {}).items() if key not in EXTENSION_READ_ONLY
    }
    properties.update(publisher=options["publisher"], type=options["extension"])
    if options["version"] is not None:
        properties["typeHandlerVersion"] = options["version"]
    if options["enable_auto_upgrade"] is not None:
        properties["enableAutomaticUpgrade"] = options["enable_auto_upgrade"]
    if options["extension_settings"] is not None:
        properties["settings"] = options["extension_settings"]
    return client.send("PUT", path, {"properties": properties})


def extension_show(client: cli.Client, options: Options) -> Any:
    return client.get(f"{_set_path(options)}/extensions/{cli.segment(options['extension'])}")


def extension_list(client: cli.Client, options: Options) -> list[Any]:
    return client.get_all(f"{_set_path(options)}/extensions")


# --- the parser --------------------------------------------------------------------------------


def _caller(parser: CommandParser) -> None:
    parser.add_argument("--subscription", help="Only needed when the name is not unique across subscriptions")
    parser.add_argument(
        "--user", help="Act as this console user, with its role (default: the command line, with full rights)"
    )


def _scale_set(parser: CommandParser, *, name_flags: tuple[str, ...] = ("--name", "-n")) -> None:
    parser.add_argument("--resource-group", "-g", required=True)
    parser.add_argument(*name_flags, dest="scale_set", required=True, metavar="NAME", help="Scale set name")
    _caller(parser)


def _instance_ids(parser: CommandParser, *, required: bool) -> None:
    parser.add_argument(
        "--instance-ids",
        nargs="+",
        required=required,
        metavar="ID",
        help="Instance ids, or * for all" + ("" if required else " (default: all)"),
    )


def _leaf(commands: Any, name: str, handler: Handler, help_text: str) -> CommandParser:
    parser: CommandParser = commands.add_parser(name, help=help_text, description=help_text)
    parser.set_defaults(handler=handler)
    return parser


def _add_rolling_upgrade(commands: Any) -> None:
    group = commands.add_parser("rolling-upgrade", help="Start, cancel or show OS rolling upgrades")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, help_text in (
        ("start", rolling_upgrade_start, "Start an OS rolling upgrade to the latest image, now"),
        ("cancel", rolling_upgrade_cancel, "Cancel the rolling upgrade in progress"),
        ("get-latest", rolling_upgrade_get_latest, "Show the latest rolling upgrade's status"),
    ):
        _scale_set(_leaf(actions, name, handler, help_text))


def _add_create(commands: Any) -> None:
    creator = _leaf(commands, "create", create, "Create a scale set and its instances")
    creator.add_argument("--resource-group", "-g", required=True)
    creator.add_argument("--name", "-n", required=True, help="Scale set name")
    creator.add_argument("--location", "-l", required=True, help="Region name, like eastus")
    creator.add_argument("--image", required=True, type=_image_urn, metavar="URN", help=f"Like {URN_EXAMPLE}")
    creator.add_argument("--instance-count", type=int, default=2, metavar="N", help="Default: 2")
    modes = list(UpgradeMode.values)
    creator.add_argument(
        "--upgrade-policy-mode",
        type=_one_of(modes),
        default=UpgradeMode.MANUAL.value,
        metavar="|".join(modes),
        help="Default: Manual",
    )
    creator.add_argument("--vm-sku", help="VM size, like Standard_D2s_v3 (default: the console's)")
    drivers = list(DriverName.values)
    creator.add_argument(
        "--driver",
        type=_one_of(drivers),
        default=DriverName.SIMULATOR.value,
        metavar="|".join(drivers),
        help="What the instances are: simulated (default), or each a real process on this machine. "
        "Fixed once the set is made",
    )
    creator.add_argument(
        "--app-health",
        type=_app_health,
        metavar="PROTOCOL:PORT[:PATH]",
        help="Add the Application Health extension probing each instance, like http:80:/health or tcp:8080",
    )
    creator.add_argument(
        "--subscription", help="Default: the one subscription holding scale sets (needed when there are several)"
    )
    creator.add_argument(
        "--user", help="Act as this console user, with its role (default: the command line, with full rights)"
    )


def _add_extension(commands: Any) -> None:
    group = commands.add_parser("extension", help="Set, show or list a scale set's extensions")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    name_flags = ("--vmss-name",)
    setter = _leaf(actions, "set", extension_set, "Add or update an extension")
    _scale_set(setter, name_flags=name_flags)
    setter.add_argument("--name", "-n", dest="extension", required=True, help="Extension name (its type)")
    setter.add_argument("--publisher", required=True)
    setter.add_argument("--extension-instance-name", dest="instance_name", help="Default: the extension name")
    setter.add_argument("--version", help="typeHandlerVersion, like 2.0")
    setter.add_argument("--enable-auto-upgrade", type=_true_or_false, metavar="true|false")
    setter.add_argument(
        "--settings",
        "--extension-settings",
        dest="extension_settings",
        type=_json_object,
        metavar="JSON",
        help="Public settings, a JSON object. From manage.py write --extension-settings: Django reads "
        "--settings anywhere on its command line as its own settings module, before this command runs",
    )
    shower = _leaf(actions, "show", extension_show, "Show an extension")
    _scale_set(shower, name_flags=name_flags)
    shower.add_argument("--name", "-n", dest="extension", required=True, help="Extension instance name")
    _scale_set(_leaf(actions, "list", extension_list, "List the extensions"), name_flags=name_flags)


class Command(ConsoleCommand):
    help = (
        "The az vmss commands, printing the REST API's own JSON (the command calls the API in-process). "
        "Long-running actions (rolling-upgrade start/cancel, update-instances, reimage, start, restart, stop, "
        "deallocate) do not wait, as az's --no-wait: they print the operation's status as its "
        "Azure-AsyncOperation URL answers it. API errors exit 1 with ARM's code and message."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        lister = _leaf(commands, "list", scale_set_list, "List scale sets")
        lister.add_argument("--resource-group", "-g")
        _caller(lister)
        _add_create(commands)
        _scale_set(_leaf(commands, "show", show, "Show a scale set"))
        _scale_set(_leaf(commands, "list-instances", list_instances, "List a scale set's instances"))
        viewer = _leaf(commands, "get-instance-view", get_instance_view, "Show the instance view of a set or instance")
        _scale_set(viewer)
        viewer.add_argument("--instance-id", help="One instance's view instead of the set's")
        _add_rolling_upgrade(commands)
        _scale_set(_leaf(commands, "get-os-upgrade-history", get_os_upgrade_history, "List OS upgrade history"))
        upgrader = _leaf(commands, "update-instances", update_instances, "Upgrade instances to the latest model")
        _scale_set(upgrader)
        _instance_ids(upgrader, required=True)
        for name, (action, help_text) in INSTANCE_ACTIONS.items():
            acting = _leaf(commands, name, instance_action(action), help_text)
            _scale_set(acting)
            _instance_ids(acting, required=False)
        updater = _leaf(commands, "update", update, "Update the scale set's model (az's generic --set)")
        _scale_set(updater)
        updater.add_argument(
            "--set",
            dest="assignments",
            action="append",
            type=_assignment,
            required=True,
            metavar="PATH=VALUE",
            help="Like upgradePolicy.mode=Rolling or sku.capacity=5; VALUE is JSON when it parses",
        )
        _add_extension(commands)

    def handle(self, *args: Any, **options: Any) -> None:
        user = cli.console_user(options["user"]) if options.get("user") else None
        result = options["handler"](cli.Client(user), options)
        if result is not None:
            self.print_json(result)
