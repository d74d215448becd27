"""Choosing a scale set's driver (SPEC 8) through the API and `manage.py vmss create` (SPEC 7).

`properties.driver` is the console's own property: "simulator" (the default) or "local", each
instance a real process on this machine. It is fixed when the set is made, as ARM fixes
platformFaultDomainCount: a change is a 400 PropertyChangeNotAllowed, the same value is
accepted (so a set read with GET can be sent back as it is). Making a "local" set writes rows
only: its processes are started by the local driver's tasks, which these tests do not run.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from fleet.models import DriverName, Instance, InstanceProcess, ScaleSet, ScaleSetExtension
from tests import factories
from tests.api.cli_helpers import refused, usage_error, vmss
from tests.api.conftest import ApiClient
from tests.upgrades.conftest import no_enqueue  # noqa: F401  (autouse: tasks are recorded, not sent)

pytestmark = pytest.mark.django_db

SUB = factories.SUBSCRIPTION
OTHER_SUB = "22222222-2222-2222-2222-222222222222"
SETS = f"/subscriptions/{SUB}/resourceGroups/rg-test/providers/Microsoft.Compute/virtualMachineScaleSets"
URN = "Canonical:UbuntuServer:18.04-LTS:latest"


def new_set_body(**properties: Any) -> dict[str, Any]:
    """A small new set on the published Ubuntu image, with `properties` added."""
    return {
        "location": "eastus",
        "sku": {"capacity": 2},
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS"}
                }
            },
            **properties,
        },
    }


def assert_arm_error(response: Any, status: int, code: str, target: str) -> dict[str, Any]:
    """The answer is ARM's error JSON (SPEC 7: {"error": {code, message, target}}); the error."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert error["target"] == target
    assert error["message"]
    return error


@pytest.fixture
def published(db: None) -> None:
    factories.publish(factories.OLD_VERSION, factories.region("eastus"))


# --- the API -------------------------------------------------------------------------------------


def test_put_with_driver_local_creates_a_local_set_and_answers_its_driver(
    operator_api: ApiClient, published: None
) -> None:
    response = operator_api.put(f"{SETS}/procs", new_set_body(driver="local"))

    assert response.status_code == 201, response.content
    assert response.json()["properties"]["driver"] == "local"
    scale_set = ScaleSet.objects.get(name="procs")
    assert scale_set.driver == DriverName.LOCAL
    assert scale_set.instances.count() == 2
    assert not InstanceProcess.objects.exists()  # rows only: the local driver's tasks start processes
    assert operator_api.get(f"{SETS}/procs").json() == response.json()


def test_put_without_a_driver_creates_a_simulated_set(operator_api: ApiClient, published: None) -> None:
    response = operator_api.put(f"{SETS}/sim", new_set_body())

    assert response.status_code == 201, response.content
    assert response.json()["properties"]["driver"] == "simulator"
    assert ScaleSet.objects.get().driver == DriverName.SIMULATOR


def test_the_driver_matches_case_insensitively_as_arm_enums_do(operator_api: ApiClient, published: None) -> None:
    response = operator_api.put(f"{SETS}/procs", new_set_body(driver="Local"))

    assert response.status_code == 201, response.content
    assert response.json()["properties"]["driver"] == "local"
    assert ScaleSet.objects.get().driver == DriverName.LOCAL


@pytest.mark.parametrize(
    ("driver", "message"),
    [
        ("kubernetes", "'kubernetes' is not a valid properties.driver: one of simulator, local."),
        ("", "'' is not a valid properties.driver: one of simulator, local."),
        (1, "'properties.driver' must be a string."),
        (["local"], "'properties.driver' must be a string."),
    ],
)
def test_an_unknown_driver_is_400_naming_the_allowed_values_and_creates_nothing(
    operator_api: ApiClient, published: None, driver: Any, message: str
) -> None:
    response = operator_api.put(f"{SETS}/procs", new_set_body(driver=driver))

    error = assert_arm_error(response, 400, "InvalidParameter", "properties.driver")
    assert error["message"] == message
    assert not ScaleSet.objects.exists()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_changing_the_driver_after_create_is_400_property_change_not_allowed(
    operator_api: ApiClient, method: str
) -> None:
    factories.scale_set("web", 3)
    before = operator_api.get(f"{SETS}/web").json()
    body: dict[str, Any] = {"properties": {"driver": "local"}}
    if method == "put":  # the whole set as read, with another driver
        body = {**before, "properties": {**before["properties"], "driver": "local"}}

    response = getattr(operator_api, method)(f"{SETS}/web", body)

    error = assert_arm_error(response, 400, "PropertyChangeNotAllowed", "properties.driver")
    assert error["message"] == "Changing property 'properties.driver' is not allowed after the scale set is created."
    assert ScaleSet.objects.get().driver == DriverName.SIMULATOR
    assert operator_api.get(f"{SETS}/web").json() == before


def test_a_driver_change_is_refused_whole_with_the_other_changes_of_the_body(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3, driver="local")
    body = {
        "sku": {"capacity": 5},
        "properties": {"driver": "simulator", "upgradePolicy": {"mode": "Rolling"}},
    }

    response = operator_api.patch(f"{SETS}/web", body)

    assert_arm_error(response, 400, "PropertyChangeNotAllowed", "properties.driver")
    scale_set = ScaleSet.objects.get()
    assert (scale_set.driver, scale_set.upgrade_mode, scale_set.capacity) == ("local", "Manual", 3)
    assert Instance.objects.count() == 3


def test_the_same_driver_is_accepted_in_patch_and_in_put_of_what_get_read(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3, driver="local")
    before = operator_api.get(f"{SETS}/web").json()
    assert before["properties"]["driver"] == "local"

    patched = operator_api.patch(f"{SETS}/web", {"properties": {"driver": "LOCAL", "singlePlacementGroup": True}})
    assert patched.status_code == 200, patched.content
    assert patched.json() == before

    put = operator_api.put(f"{SETS}/web", before)
    assert put.status_code == 200, put.content
    assert put.json() == before
    assert ScaleSet.objects.get().model_version == 1


def test_get_and_list_show_each_sets_driver(viewer_api: ApiClient) -> None:
    factories.scale_set("sim", 1)
    factories.scale_set("procs", 1, driver="local")

    assert viewer_api.get(f"{SETS}/sim").json()["properties"]["driver"] == "simulator"
    assert viewer_api.get(f"{SETS}/procs").json()["properties"]["driver"] == "local"
    listed = {s["name"]: s["properties"]["driver"] for s in viewer_api.get(SETS).json()["value"]}
    assert listed == {"sim": "simulator", "procs": "local"}


def test_reading_a_local_set_costs_the_same_queries_as_a_simulated_one(viewer_api: ApiClient) -> None:
    factories.scale_set("sim", 3)
    factories.scale_set("procs", 3, driver="local")
    viewer_api.get(SETS)  # the token's first use of the minute writes last_used: not measured
    counts = {}
    for name in ("sim", "procs"):
        with CaptureQueriesContext(connection) as queries:
            assert viewer_api.get(f"{SETS}/{name}").status_code == 200
        counts[name] = len(queries)

    assert counts["procs"] == counts["sim"]


# --- manage.py vmss create -----------------------------------------------------------------------


CREATE_WEB = ("create", "-g", "rg-test", "-n", "web", "-l", "eastus", "--subscription", SUB)


def test_create_makes_a_simulated_manual_set_of_two_by_default(viewer_api: ApiClient, published: None) -> None:
    printed = vmss(*CREATE_WEB, "--image", URN)

    assert printed == viewer_api.get(f"{SETS}/web").json()
    assert printed["properties"]["driver"] == "simulator"
    assert printed["properties"]["upgradePolicy"]["mode"] == "Manual"
    assert printed["sku"]["capacity"] == 2
    assert printed["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"] == []
    reference = printed["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert reference == {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"}
    scale_set = ScaleSet.objects.get()
    assert (scale_set.subscription_id, scale_set.resource_group, scale_set.region.name) == (SUB, "rg-test", "eastus")
    assert scale_set.instances.count() == 2


def test_create_with_driver_local_and_app_health_writes_a_local_set_with_the_extension(
    viewer_api: ApiClient, published: None
) -> None:
    printed = vmss(
        *CREATE_WEB,
        "--image",
        f"Canonical:UbuntuServer:18.04-LTS:{factories.OLD_VERSION}",
        "--driver",
        "local",
        "--instance-count",
        "3",
        "--upgrade-policy-mode",
        "rolling",
        "--vm-sku",
        "Standard_D4s_v3",
        "--app-health",
        "http:8080:/healthz",
    )

    assert printed == viewer_api.get(f"{SETS}/web").json()
    assert printed["properties"]["driver"] == "local"
    assert printed["properties"]["upgradePolicy"]["mode"] == "Rolling"
    assert printed["sku"] == {"name": "Standard_D4s_v3", "tier": "Standard", "capacity": 3}
    [health] = printed["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    assert health["name"] == "HealthExtension"
    assert health["properties"]["publisher"] == "Microsoft.ManagedServices"
    assert health["properties"]["type"] == "ApplicationHealthLinux"
    assert health["properties"]["settings"] == {"protocol": "http", "port": 8080, "requestPath": "/healthz"}
    scale_set = ScaleSet.objects.get()
    assert scale_set.driver == DriverName.LOCAL
    assert scale_set.image_version == factories.OLD_VERSION
    assert scale_set.instances.count() == 3
    assert ScaleSetExtension.objects.get().is_application_health
    assert not InstanceProcess.objects.exists()  # rows only: no process is started here


def test_create_with_a_tcp_app_health_sends_no_request_path(published: None) -> None:
    printed = vmss(*CREATE_WEB, "--image", URN, "--app-health", "TCP:8080")

    [health] = printed["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    assert health["properties"]["settings"] == {"protocol": "tcp", "port": 8080}


def test_create_takes_the_one_subscription_the_caller_sees(published: None) -> None:
    factories.scale_set("existing", 1)

    printed = vmss("create", "-g", "rg-test", "-n", "web", "-l", "eastus", "--image", URN)

    assert printed["id"] == f"{SETS}/web"
    assert ScaleSet.objects.get(name="web").subscription_id == SUB


def test_create_asks_for_the_subscription_when_there_is_none_or_several(published: None) -> None:
    without = ("create", "-g", "rg-test", "-n", "web", "-l", "eastus", "--image", URN)
    assert refused(*without) == "No subscription holds a scale set yet: give --subscription for the new one."

    factories.scale_set("existing", 1)
    factories.scale_set("other", 1)
    ScaleSet.objects.filter(name="other").update(subscription_id=OTHER_SUB)
    assert refused(*without) == f"Several subscriptions hold scale sets ({SUB}, {OTHER_SUB}): give --subscription."
    assert not ScaleSet.objects.filter(name="web").exists()


def test_create_of_an_image_that_is_not_published_is_the_apis_refusal(published: None) -> None:
    message = refused(*CREATE_WEB, "--image", "Canonical:UbuntuServer:22.04-LTS:latest")

    assert message.splitlines() == [
        "(InvalidParameter) No version of this image is available in eastus yet.",
        "Target: properties.virtualMachineProfile.storageProfile.imageReference.version",
    ]
    assert not ScaleSet.objects.exists()


def test_create_with_a_negative_instance_count_is_the_apis_refusal(published: None) -> None:
    message = refused(*CREATE_WEB, "--image", URN, "--instance-count", "-1")

    assert message.splitlines() == ["(InvalidParameter) 'sku.capacity' is out of range.", "Target: sku.capacity"]
    assert not ScaleSet.objects.exists()


def test_create_refuses_what_the_api_refuses_in_the_health_extension(published: None) -> None:
    message = refused(*CREATE_WEB, "--image", URN, "--app-health", "http:8080")

    assert "requestPath is required for http and https, like /health." in message
    assert not ScaleSet.objects.exists()


def test_create_of_a_set_that_exists_is_refused_and_changes_nothing(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    before = viewer_api.get(f"{SETS}/web").json()

    message = refused(*CREATE_WEB, "--image", "Canonical:UbuntuServer:18.04-LTS:latest", "--driver", "local")

    assert message == "A scale set named web exists already in resource group rg-test: change it with vmss update."
    assert viewer_api.get(f"{SETS}/web").json() == before


def test_create_as_a_viewer_is_refused(published: None) -> None:
    factories.user("vera", "viewers")

    assert refused(*CREATE_WEB, "--image", URN, "--user", "vera").startswith("(AuthorizationFailed)")
    assert not ScaleSet.objects.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--image", "Canonical:UbuntuServer:18.04-LTS"), "is not an image URN: give publisher:offer:sku:version"),
        (("--image", "Canonical::18.04-LTS:latest"), "is not an image URN"),
        (("--image", URN, "--driver", "docker"), "'docker' is not one of simulator, local."),
        (("--image", URN, "--upgrade-policy-mode", "Sideways"), "'Sideways' is not one of Automatic, Manual, Rolling."),
        (("--image", URN, "--app-health", "http"), "'http' is not PROTOCOL:PORT[:PATH]"),
        (("--image", URN, "--app-health", "http:eighty:/health"), "is not PROTOCOL:PORT[:PATH]"),
        (("--image", URN, "--instance-count", "two"), "invalid int value: 'two'"),
        ((), "the following arguments are required: --image"),
    ],
)
def test_create_with_a_malformed_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], options: tuple[str, ...], message: str
) -> None:
    assert message in usage_error(capsys, *CREATE_WEB, *options)
    assert not ScaleSet.objects.exists()


def test_create_without_a_location_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "create", "-g", "rg-test", "-n", "web", "--image", URN)
    assert "the following arguments are required: --location/-l" in err
