"""`manage.py vmss …`: the `az vmss` commands of SPEC 7, as a client of the REST API.

Each command builds the request az would send and hands it to the API in-process (api.cli):
what it prints is the API's JSON, and what it refuses is the API's error, by construction.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandParser

from api import cli
from fleet.cli import ConsoleCommand

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
