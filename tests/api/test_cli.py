"""`manage.py vmss` (SPEC 7, CLI): the az vmss commands as an in-process client of the API.

Each command's happy path checks that what it prints is what the API answers the same request
(read with the test client and a bearer token); each has a bad input with its exit code: 1 for
a refusal (CommandError, the API's code and message), 2 for a usage error (argparse, shown
through ManagementUtility, which is what manage.py runs).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.management.base import CommandError

from api import cli
from fleet import services as fleet_services
from fleet.models import ScaleSet
from tests import factories
from tests.api.cli_helpers import refused, usage_error, vmss
from tests.api.conftest import ApiClient
from tests.upgrades.conftest import no_enqueue  # noqa: F401  (autouse: tasks are recorded, not sent)
from upgrades import services
from upgrades.models import Kind, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db

SUB = factories.SUBSCRIPTION
OTHER_SUB = "22222222-2222-2222-2222-222222222222"
GROUP = f"/subscriptions/{SUB}/resourceGroups/rg-test"
SETS = f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets"
WEB = f"{SETS}/web"
AT_WEB = ("-g", "rg-test", "-n", "web")
NO_RUN_TO_CANCEL = "(OperationNotAllowed) There is no ongoing Rolling Upgrade to cancel."


def values(api: ApiClient, path: str) -> list[Any]:
    """Every item of an API list, following nextLink through the test client."""
    items: list[Any] = []
    body = api.get(path).json()
    items.extend(body["value"])
    while "nextLink" in body:
        link = urlsplit(body["nextLink"])
        body = api.client.get(f"{link.path}?{link.query}", headers=api._headers()).json()
        items.extend(body["value"])
    return items


def operation(api: ApiClient, printed: dict[str, Any]) -> Any:
    """The operation-status resource of a printed operation, as the API answers it."""
    path = f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations/eastus/operations/{printed['name']}"
    response = api.get(path)
    assert response.status_code == 200, response.content
    return response.json()


def other_subscription_set(name: str = "web") -> ScaleSet:
    return fleet_services.scale_set_create(
        subscription_id=OTHER_SUB,
        resource_group="rg-test",
        name=name,
        region=factories.region(),
        capacity=2,
        **factories.UBUNTU,
        image_version="latest",
    )


@pytest.fixture
def operator(db: None) -> User:
    return factories.user("olga", "operators")


# --- the in-process client -----------------------------------------------------------------------


def test_call_adds_the_api_version_and_acts_as_the_command_line(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    response = cli.call("GET", WEB)
    assert response.status == 200
    assert response.json == viewer_api.get(WEB).json()
    assert response.headers["Content-Type"].startswith("application/json")


def test_call_answers_the_apis_own_errors_for_a_bad_api_version_and_an_unknown_path() -> None:
    assert cli.call("GET", WEB, query={"api-version": "2001-01-01"}).json["error"]["code"] == (
        "InvalidApiVersionParameter"
    )
    unknown = cli.call("GET", f"{WEB}/nonsense")
    assert unknown.status == 404
    assert unknown.json["error"]["code"] == "InvalidResourceType"


def test_the_command_line_user_is_staff_without_a_database_row() -> None:
    assert cli.COMMAND_LINE.is_authenticated
    assert not cli.COMMAND_LINE.is_anonymous
    assert cli.COMMAND_LINE.is_staff
    assert list(cli.COMMAND_LINE.groups.all()) == []
    assert cli.COMMAND_LINE.get_username() == "manage.py"


def test_an_unknown_or_deactivated_user_is_refused() -> None:
    factories.scale_set("web", 1)
    assert refused("show", *AT_WEB, "--user", "nobody") == "No console user named nobody."
    User.objects.create_user("gone", is_active=False)
    assert refused("show", *AT_WEB, "--user", "gone") == "The console user gone is deactivated."


# --- az's generic update -----------------------------------------------------------------------


def _resource() -> dict[str, Any]:
    return {
        "id": "/x",
        "name": "web",
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "sku": {"capacity": 2},
        "properties": {
            "upgradePolicy": {"mode": "Manual", "rollingUpgradePolicy": {"maxBatchInstancePercent": 20}},
            "virtualMachineProfile": {"extensionProfile": {"extensions": [{"name": "A", "properties": {"x": 1}}]}},
            "provisioningState": "Succeeded",
            "uniqueId": "u",
            "timeCreated": "t",
        },
    }


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("upgradePolicy.mode=Rolling", "upgradePolicy.mode", "Rolling"),
        ("sku.capacity=5", "sku.capacity", 5),
        ("a.b=true", "a.b", True),
        ('a={"b": [1]}', "a", {"b": [1]}),
        ("a=x=y", "a", "x=y"),
        ("extensions[name=A].properties.x=2", "extensions[name=A].properties.x", 2),
    ],
)
def test_an_assignment_splits_at_the_first_equals_outside_brackets_and_reads_json(
    text: str, path: str, value: Any
) -> None:
    assert cli.split_assignment(text) == (path, value)


def test_generic_update_takes_full_and_flattened_paths_and_drops_read_only_properties() -> None:
    body = cli.generic_update(
        _resource(),
        [
            ("upgradePolicy.mode", "Rolling"),
            ("properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent", 50),
            ("sku.capacity", 5),
            ("virtualMachineProfile.extensionProfile.extensions[0].properties.x", 2),
            ("virtualMachineProfile.extensionProfile.extensions[name=A].properties.x", 3),
        ],
    )
    assert body == {
        "sku": {"capacity": 5},
        "properties": {
            "upgradePolicy": {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 50}},
            "virtualMachineProfile": {"extensionProfile": {"extensions": [{"name": "A", "properties": {"x": 3}}]}},
        },
    }


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("upgradePolicy.mdoe", "Couldn't find 'mdoe' in 'properties.upgradePolicy'. Available options: mode,"),
        ("nothing.here", "Couldn't find 'nothing' in the resource. Available options: id, name, properties,"),
        ("virtualMachineProfile.extensionProfile.extensions[3].name", "Index 3 is out of range"),
        ("sku.capacity.deeper", "Couldn't find 'deeper' in 'sku.capacity'."),
    ],
)
def test_generic_update_refuses_a_path_not_in_the_resource_by_name(path: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        cli.generic_update(_resource(), [(path, 1)])
    assert str(caught.value).startswith(message)


# --- list and show -----------------------------------------------------------------------------


def test_list_follows_every_next_link_into_one_array(viewer_api: ApiClient, settings) -> None:
    settings.API_PAGE_SIZE = 1
    for name in ("web", "api", "jobs"):
        factories.scale_set(name, 1)
    printed = vmss("list", "-g", "rg-test")
    assert printed == values(viewer_api, SETS)
    assert [s["name"] for s in printed] == ["web", "api", "jobs"]
    assert vmss("list", "--subscription", SUB) == printed


def test_list_without_a_subscription_lists_every_subscription_the_caller_sees(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 1)
    other_subscription_set("api")
    printed = vmss("list")
    expected = values(viewer_api, f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachineScaleSets")
    expected += values(viewer_api, f"/subscriptions/{OTHER_SUB}/providers/Microsoft.Compute/virtualMachineScaleSets")
    assert printed == expected
    assert len(printed) == 2


def test_list_as_an_unknown_user_is_refused_and_a_stray_argument_is_a_usage_error(capsys) -> None:
    assert refused("list", "--user", "nobody") == "No console user named nobody."
    assert "unrecognized arguments: --name" in usage_error(capsys, "list", "--name", "web")


def test_show_prints_the_apis_scale_set_and_names_are_case_insensitive(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    printed = vmss("show", *AT_WEB)
    assert printed == viewer_api.get(WEB).json()
    assert vmss("show", "-g", "RG-TEST", "-n", "Web") == printed
    assert vmss("show", *AT_WEB, "--user", "viewers-user") == printed  # the fixture's viewer


def test_show_of_a_missing_set_is_refused_with_exit_1(viewer_api: ApiClient) -> None:
    assert refused("show", *AT_WEB) == "No scale set named web in resource group rg-test."
    factories.scale_set("web", 1)
    assert refused("show", *AT_WEB, "--subscription", OTHER_SUB) == (
        "(ResourceNotFound) The Resource 'Microsoft.Compute/virtualMachineScaleSets/web' "
        "under resource group 'rg-test' was not found."
    )
    assert "virtualMachineScaleSets/web?x'" in refused("show", "-g", "rg-test", "-n", "web?x", "--subscription", SUB)


def test_show_asks_for_the_subscription_when_two_have_the_set(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 1)
    other_subscription_set("web")
    assert "give --subscription" in refused("show", *AT_WEB)
    assert (
        vmss("show", *AT_WEB, "--subscription", OTHER_SUB)
        == viewer_api.get(
            f"/subscriptions/{OTHER_SUB}/resourceGroups/rg-test/providers/Microsoft.Compute/virtualMachineScaleSets/web"
        ).json()
    )


def test_show_without_a_name_or_a_command_is_a_usage_error(capsys) -> None:
    assert "the following arguments are required: --name/-n" in usage_error(capsys, "show", "-g", "rg-test")
    assert "invalid choice: 'shwo'" in usage_error(capsys, "shwo", *AT_WEB)
    assert "required: COMMAND" in usage_error(capsys)


# --- instances -----------------------------------------------------------------------------------


def test_list_instances_prints_every_page_as_one_array(viewer_api: ApiClient, settings) -> None:
    settings.API_PAGE_SIZE = 3
    factories.scale_set("web", 7)
    printed = vmss("list-instances", *AT_WEB)
    assert printed == values(viewer_api, f"{WEB}/virtualMachines")
    assert [vm["instanceId"] for vm in printed] == [str(n) for n in range(7)]


def test_list_instances_without_a_group_is_a_usage_error(capsys) -> None:
    assert "--resource-group/-g" in usage_error(capsys, "list-instances", "-n", "web")


def test_get_instance_view_of_the_set_and_of_one_instance(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    assert vmss("get-instance-view", *AT_WEB) == viewer_api.get(f"{WEB}/instanceView").json()
    assert (
        vmss("get-instance-view", *AT_WEB, "--instance-id", "2")
        == viewer_api.get(f"{WEB}/virtualMachines/2/instanceView").json()
    )


def test_get_instance_view_of_a_missing_instance_is_the_apis_404() -> None:
    factories.scale_set("web", 3)
    message = refused("get-instance-view", *AT_WEB, "--instance-id", "99")
    assert message.startswith("(ResourceNotFound) The Resource 'Microsoft.Compute/virtualMachineScaleSets/web/")


# --- rolling upgrades ----------------------------------------------------------------------------


def test_rolling_upgrade_start_prints_the_operation_then_get_latest_shows_it_completed(
    viewer_api: ApiClient, drive
) -> None:
    factories.outdated_scale_set(4)
    printed = vmss("rolling-upgrade", "start", *AT_WEB)
    assert printed == operation(viewer_api, printed)
    assert printed["status"] == "InProgress"
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.MANUAL_OS
    assert run.actor is None  # the command line is no console user

    drive(run)
    latest = vmss("rolling-upgrade", "get-latest", *AT_WEB)
    assert latest == viewer_api.get(f"{WEB}/rollingUpgrades/latest").json()
    assert latest["properties"]["runningStatus"]["code"] == "Completed"
    assert operation(viewer_api, printed)["status"] == "Succeeded"


def test_rolling_upgrade_start_as_an_operator_records_the_actor(operator: User) -> None:
    factories.outdated_scale_set(4)
    vmss("rolling-upgrade", "start", *AT_WEB, "--user", "olga")
    assert UpgradeRun.objects.get().actor == operator


def test_a_viewer_cannot_start_a_rolling_upgrade() -> None:
    factories.outdated_scale_set(4)
    factories.user("vera", "viewers")
    assert refused("rolling-upgrade", "start", *AT_WEB, "--user", "vera") == (
        "(AuthorizationFailed) The client 'vera' does not have authorization to perform this action: "
        "it needs the operators role."
    )
    assert not UpgradeRun.objects.exists()


def test_a_second_start_is_refused_with_the_apis_409() -> None:
    factories.outdated_scale_set(4)
    vmss("rolling-upgrade", "start", *AT_WEB)
    assert refused("rolling-upgrade", "start", *AT_WEB).startswith("(OperationNotAllowed) An upgrade is already")
    assert UpgradeRun.objects.count() == 1


def test_rolling_upgrade_cancel_prints_the_operation_and_the_run_ends_cancelled(viewer_api: ApiClient, drive) -> None:
    factories.outdated_scale_set(10)
    vmss("rolling-upgrade", "start", *AT_WEB)
    printed = vmss("rolling-upgrade", "cancel", *AT_WEB)
    assert printed == operation(viewer_api, printed)
    assert drive(UpgradeRun.objects.get()).status == RunStatus.CANCELLED


def test_rolling_upgrade_cancel_with_none_running_is_refused_with_exit_1() -> None:
    factories.outdated_scale_set(4)
    assert refused("rolling-upgrade", "cancel", *AT_WEB) == NO_RUN_TO_CANCEL


def test_rolling_upgrade_get_latest_with_none_is_the_apis_404() -> None:
    factories.outdated_scale_set(4)
    assert refused("rolling-upgrade", "get-latest", *AT_WEB) == "(NotFound) No rolling upgrade has run on web yet."


def test_rolling_upgrade_without_an_action_is_a_usage_error(capsys) -> None:
    assert "required: ACTION" in usage_error(capsys, "rolling-upgrade")
    assert "invalid choice: 'pause'" in usage_error(capsys, "rolling-upgrade", "pause", *AT_WEB)


def test_get_os_upgrade_history_prints_the_value_array(viewer_api: ApiClient, drive) -> None:
    scale_set = factories.outdated_scale_set(2)
    drive(services.os_upgrade_now(scale_set=scale_set))
    printed = vmss("get-os-upgrade-history", *AT_WEB)
    assert printed == viewer_api.get(f"{WEB}/osUpgradeHistory").json()["value"]
    assert len(printed) == 1


def test_get_os_upgrade_history_of_a_missing_set_is_refused() -> None:
    assert refused("get-os-upgrade-history", *AT_WEB) == "No scale set named web in resource group rg-test."


# --- manual upgrade, reimage and power actions ---------------------------------------------------


def test_update_instances_upgrades_the_named_instances_to_the_latest_model(viewer_api: ApiClient) -> None:
    scale_set = factories.scale_set("web", 4)
    services.update_model(scale_set=scale_set, changes={"vm_size": "Standard_D4s_v3"})  # Manual: no run
    printed = vmss("update-instances", *AT_WEB, "--instance-ids", "0", "1")
    assert printed == operation(viewer_api, printed)
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.MANUAL
    assert run.targeted_count == 2


def test_update_instances_needs_instance_ids(capsys) -> None:
    assert "the following arguments are required: --instance-ids" in usage_error(capsys, "update-instances", *AT_WEB)
    assert "expected at least one argument" in usage_error(capsys, "update-instances", *AT_WEB, "--instance-ids")


@pytest.mark.parametrize("command", ["reimage", "start", "restart", "stop", "deallocate"])
@pytest.mark.parametrize("ids", [(), ("--instance-ids", "0", "2")])
def test_instance_actions_print_the_operation(viewer_api: ApiClient, command: str, ids: tuple[str, ...]) -> None:
    factories.scale_set("web", 3)
    printed = vmss(command, *AT_WEB, *ids)
    assert printed == operation(viewer_api, printed)
    assert set(printed) >= {"name", "status", "startTime"}


@pytest.mark.parametrize("command", ["reimage", "start", "restart", "stop", "deallocate"])
def test_instance_actions_refuse_a_missing_instance_and_a_viewer(command: str) -> None:
    factories.scale_set("web", 3)
    factories.user("vera", "viewers")
    assert refused(command, *AT_WEB, "--user", "vera").startswith("(AuthorizationFailed)")
    assert refused(command, *AT_WEB, "--instance-ids", "0", "99").splitlines() == [
        "(InvalidParameter) web has no instance 99.",
        "Target: instanceIds",
    ]


def test_reimage_while_a_run_rolls_forward_is_the_apis_refusal() -> None:
    factories.outdated_scale_set(4)
    vmss("rolling-upgrade", "start", *AT_WEB)
    assert refused("reimage", *AT_WEB).startswith("(OperationNotAllowed)")


# --- update --set --------------------------------------------------------------------------------


def test_update_sets_full_and_flattened_paths_and_prints_the_apis_set(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    printed = vmss(
        "update",
        *AT_WEB,
        "--set",
        "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent=50",
        "--set",
        "upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches=PT5S",
    )
    assert printed == viewer_api.get(WEB).json()
    policy = printed["properties"]["upgradePolicy"]["rollingUpgradePolicy"]
    assert policy["maxBatchInstancePercent"] == 50
    assert policy["pauseTimeBetweenBatches"] == "PT5S"


def test_update_of_a_path_not_in_the_set_is_refused_by_name() -> None:
    factories.scale_set("web", 2)
    before = cli.call("GET", WEB).json
    message = refused("update", *AT_WEB, "--set", "upgradePolicy.mdoe=Rolling")
    assert message.startswith("Couldn't find 'mdoe' in 'properties.upgradePolicy'. Available options:")
    assert cli.call("GET", WEB).json == before


def test_update_refuses_a_value_the_api_refuses() -> None:
    factories.scale_set("web", 2)
    message = refused("update", *AT_WEB, "--set", "upgradePolicy.mode=Sometimes").splitlines()
    assert message[0].startswith("(InvalidParameter) 'Sometimes' is not a valid properties.upgradePolicy.mode")
    assert message[1:] == ["Target: properties.upgradePolicy.mode"]


def test_update_needs_path_equals_value(capsys) -> None:
    assert "is not PATH=VALUE" in usage_error(capsys, "update", *AT_WEB, "--set", "upgradePolicy.mode")
    assert "the following arguments are required: --set" in usage_error(capsys, "update", *AT_WEB)


# --- extensions ----------------------------------------------------------------------------------

AT_WEB_EXTENSIONS = ("-g", "rg-test", "--vmss-name", "web")


def test_extension_set_puts_the_extension_and_prints_the_apis_answer(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    printed = vmss(
        "extension",
        "set",
        *AT_WEB_EXTENSIONS,
        "-n",
        "ApplicationHealthLinux",
        "--extension-instance-name",
        "HealthExtension",
        "--publisher",
        "Microsoft.ManagedServices",
        "--version",
        "2.0",
        "--enable-auto-upgrade",
        "true",
        "--settings",
        '{"protocol": "tcp", "port": 8080}',
    )
    assert printed == viewer_api.get(f"{WEB}/extensions/HealthExtension").json()
    properties = printed["properties"]
    assert properties["enableAutomaticUpgrade"] is True
    assert properties["type"] == "ApplicationHealthLinux"
    assert properties["typeHandlerVersion"] == "2.0"
    assert properties["settings"] == {"protocol": "tcp", "port": 8080}


def test_extension_set_on_an_existing_extension_keeps_what_is_not_given(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    before = viewer_api.get(f"{WEB}/extensions/HealthExtension").json()["properties"]
    printed = vmss(
        "extension",
        "set",
        *AT_WEB_EXTENSIONS,
        "-n",
        "ApplicationHealthLinux",
        "--extension-instance-name",
        "HealthExtension",
        "--publisher",
        "Microsoft.ManagedServices",
        "--enable-auto-upgrade",
        "true",
    )
    assert printed == viewer_api.get(f"{WEB}/extensions/HealthExtension").json()
    assert printed["properties"] == {**before, "enableAutomaticUpgrade": True}


def test_extension_set_of_a_new_extension_without_a_version_is_the_apis_refusal() -> None:
    factories.scale_set("web", 2)
    message = refused("extension", "set", *AT_WEB_EXTENSIONS, "-n", "CustomScript", "--publisher", "P")
    assert message.splitlines() == [
        "(InvalidParameter) An extension needs properties.typeHandlerVersion.",
        "Target: properties.typeHandlerVersion",
    ]


def test_extension_set_bad_options_are_usage_errors(capsys) -> None:
    base = ("extension", "set", *AT_WEB_EXTENSIONS, "-n", "ApplicationHealthLinux", "--publisher", "P")
    assert "'maybe' is not true or false" in usage_error(capsys, *base, "--enable-auto-upgrade", "maybe")
    assert "not JSON" in usage_error(capsys, *base, "--extension-settings", "{port")
    assert "give a JSON object" in usage_error(capsys, *base, "--extension-settings", "[1]")
    assert "required: --publisher" in usage_error(capsys, "extension", "set", *AT_WEB_EXTENSIONS, "-n", "X")


def test_extension_set_as_a_viewer_is_refused() -> None:
    factories.scale_set("web", 2)
    factories.user("vera", "viewers")
    message = refused(
        "extension", "set", *AT_WEB_EXTENSIONS, "-n", "ApplicationHealthLinux", "--publisher", "P", "--user", "vera"
    )
    assert message.startswith("(AuthorizationFailed)")


def test_extension_show_and_list_print_the_apis_extensions(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2, extensions=[factories.APP_HEALTH_HTTP])
    shown = vmss("extension", "show", *AT_WEB_EXTENSIONS, "-n", "HealthExtension")
    assert shown == viewer_api.get(f"{WEB}/extensions/HealthExtension").json()
    listed = vmss("extension", "list", *AT_WEB_EXTENSIONS)
    assert listed == viewer_api.get(f"{WEB}/extensions").json()["value"]
    assert [extension["name"] for extension in listed] == ["HealthExtension"]


def test_extension_show_of_a_missing_extension_is_the_apis_404() -> None:
    factories.scale_set("web", 2)
    assert refused("extension", "show", *AT_WEB_EXTENSIONS, "-n", "Nope") == (
        "(ResourceNotFound) The Resource 'Microsoft.Compute/virtualMachineScaleSets/web/extensions/Nope' "
        "under resource group 'rg-test' was not found."
    )


def test_extension_show_without_the_set_is_a_usage_error(capsys) -> None:
    assert "--vmss-name" in usage_error(capsys, "extension", "show", "-g", "rg-test", "-n", "HealthExtension")
