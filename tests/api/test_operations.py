"""Actions as long-running operations (SPEC 7): 202 with Azure-AsyncOperation, Location and
Retry-After; the operation-status resource follows the run or the driver's work to its end."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from api.models import Operation
from fleet import clock
from fleet.drivers import simulator
from fleet.models import ExtensionVersion, Instance, PowerState
from tests import factories
from tests.api.conftest import ApiClient
from upgrades.models import Kind, RunStatus, UpgradeRun

pytestmark = pytest.mark.django_db

GROUP = f"/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test"
SETS = f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets"


def poll(api: ApiClient, url: str) -> dict:
    """GET an absolute URL from a header, as a client does."""
    parts = urlsplit(url)
    response = api.client.get(f"{parts.path}?{parts.query}", headers=api._headers())
    assert response.status_code in (200, 202), response.content
    return response


def finish_driver_work(frozen_clock) -> None:
    """Apply the simulator's due steps until none are left."""
    while (due := simulator.next_due_at()) is not None:
        if due > clock.now():
            frozen_clock.advance((due - clock.now()).total_seconds())
        simulator.advance(clock.now())


def test_os_rolling_upgrade_is_a_long_running_operation_that_ends_with_its_run(
    operator_api: ApiClient, drive, settings
) -> None:
    settings.API_RETRY_AFTER_SECONDS = 7
    factories.outdated_scale_set(6)

    response = operator_api.post(f"{SETS}/web/osRollingUpgrade", b"")

    assert response.status_code == 202
    assert response.content == b""
    assert response["Retry-After"] == "7"
    status_url, monitor_url = response["Azure-AsyncOperation"], response["Location"]
    operation = Operation.objects.get()
    assert f"/subscriptions/{factories.SUBSCRIPTION}/providers/Microsoft.Compute/locations/eastus/operations/" in (
        status_url
    )
    assert str(operation.id) in status_url
    assert "api-version=2024-07-01" in status_url
    run = UpgradeRun.objects.get()
    assert run.kind == Kind.MANUAL_OS
    assert operation.run == run

    body = poll(operator_api, status_url).json()
    assert body["status"] == "InProgress"
    assert body["name"] == str(operation.id)
    assert "endTime" not in body
    assert poll(operator_api, monitor_url).status_code == 202

    drive(run)
    body = poll(operator_api, status_url).json()
    assert body["status"] == "Succeeded"
    assert "endTime" in body
    monitor = poll(operator_api, monitor_url)
    assert monitor.status_code == 200
    assert monitor.content == b""


def test_a_faulted_run_fails_its_operation_with_the_run_error(operator_api: ApiClient, drive) -> None:
    factories.outdated_scale_set(10, bad_share=0.5)
    response = operator_api.post(f"{SETS}/web/osRollingUpgrade")
    drive(UpgradeRun.objects.get())

    body = poll(operator_api, response["Azure-AsyncOperation"]).json()
    assert body["status"] == "Failed"
    assert body["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceededInRollingUpgrade"
    location = urlsplit(response["Location"])
    monitor = operator_api.client.get(f"{location.path}?{location.query}", headers=operator_api._headers())
    assert monitor.status_code == 409
    assert monitor.json()["error"]["code"] == body["error"]["code"]


def test_the_outcome_is_kept_once_seen(operator_api: ApiClient, drive) -> None:
    factories.outdated_scale_set(4)
    response = operator_api.post(f"{SETS}/web/osRollingUpgrade")
    drive(UpgradeRun.objects.get())
    first = poll(operator_api, response["Azure-AsyncOperation"]).json()
    UpgradeRun.objects.update(status=RunStatus.FAULTED)  # whatever happens to the run later
    assert poll(operator_api, response["Azure-AsyncOperation"]).json() == first


def test_cancel_is_an_operation_done_once_the_run_stops_r_cancel_1(operator_api: ApiClient, drive) -> None:
    factories.outdated_scale_set(10)
    operator_api.post(f"{SETS}/web/osRollingUpgrade")
    run = UpgradeRun.objects.get()
    drive(run, until=lambda r: r.current_batch >= 0)

    response = operator_api.post(f"{SETS}/web/rollingUpgrades/cancel")
    assert response.status_code == 202
    cancel = Operation.objects.get(action="cancel")
    assert cancel.run == run
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "InProgress"

    drive(run)
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"
    upgrade = Operation.objects.get(action="osRollingUpgrade")
    status = poll(operator_api, operator_api_status_url(upgrade)).json()
    assert status["status"] == "Canceled"


def operator_api_status_url(operation: Operation) -> str:
    return (
        f"http://testserver/subscriptions/{operation.subscription_id}/providers/Microsoft.Compute/locations/"
        f"{operation.location}/operations/{operation.id}?api-version=2024-07-01"
    )


def test_cancel_with_no_run_is_409_and_records_nothing(operator_api: ApiClient) -> None:
    factories.outdated_scale_set(4)
    response = operator_api.post(f"{SETS}/web/rollingUpgrades/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "OperationNotAllowed",
        "message": "There is no ongoing Rolling Upgrade to cancel.",
    }
    assert not Operation.objects.exists()


def test_a_second_upgrade_while_one_rolls_forward_is_409_r_one_1(operator_api: ApiClient) -> None:
    factories.outdated_scale_set(4)
    assert operator_api.post(f"{SETS}/web/osRollingUpgrade").status_code == 202
    response = operator_api.post(f"{SETS}/web/osRollingUpgrade")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "OperationNotAllowed"
    assert Operation.objects.count() == UpgradeRun.objects.count() == 1


def test_nothing_to_upgrade_is_409_and_no_run(operator_api: ApiClient) -> None:
    factories.scale_set("web", 3)
    response = operator_api.post(f"{SETS}/web/osRollingUpgrade")
    assert response.status_code == 409
    assert "Nothing to upgrade" in response.json()["error"]["message"]
    assert not UpgradeRun.objects.exists()
    assert not Operation.objects.exists()


def test_manualupgrade_brings_the_named_instances_to_the_latest_model_r_man_1(operator_api: ApiClient, drive) -> None:
    scale_set = factories.scale_set("web", 6)
    scale_set.model_version += 1
    scale_set.save()

    response = operator_api.post(f"{SETS}/web/manualupgrade", {"instanceIds": ["1", "4"]})
    assert response.status_code == 202
    run = drive(UpgradeRun.objects.get())
    assert run.kind == Kind.MANUAL
    assert run.status == RunStatus.COMPLETED
    applied = dict(Instance.objects.values_list("instance_id", "model_version"))
    assert applied == {0: 1, 1: 2, 2: 1, 3: 1, 4: 2, 5: 1}
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({}, "instanceIds"),
        ({"instanceIds": "1"}, "instanceIds"),
        ({"instanceIds": [True]}, "instanceIds"),
        ({"instanceIds": []}, "instanceIds"),
        ({"instanceIds": ["99"]}, "instanceIds"),
        ({"instanceIds": ["x"]}, "instanceIds"),
    ],
)
def test_manualupgrade_refuses_bad_instance_ids_by_name(operator_api: ApiClient, body, target) -> None:
    factories.scale_set("web", 3)
    response = operator_api.post(f"{SETS}/web/manualupgrade", body)
    assert response.status_code == 400
    assert response.json()["error"]["target"] == target
    assert not UpgradeRun.objects.exists()
    assert not Operation.objects.exists()


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{not json", b"42", b"[" * 50_000])
def test_action_bodies_that_are_not_objects_are_400(operator_api: ApiClient, body: bytes) -> None:
    factories.scale_set("web", 3)
    response = operator_api.post(f"{SETS}/web/reimage", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("InvalidRequestContent", "InvalidParameter")
    assert not Operation.objects.exists()


def test_reimage_is_done_when_the_driver_has_nothing_left_r_man_2(operator_api: ApiClient, frozen_clock) -> None:
    factories.scale_set("web", 4)
    response = operator_api.post(f"{SETS}/web/reimage", {"instanceIds": ["0", "2"]})
    assert response.status_code == 202
    assert Operation.objects.get().instance_ids == [0, 2]
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "InProgress"
    disks = dict(Instance.objects.values_list("instance_id", "os_disk"))
    assert disks[0].endswith("_OsDisk_2")
    assert disks[1].endswith("_OsDisk_1")

    finish_driver_work(frozen_clock)
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


@pytest.mark.parametrize(
    ("action", "settled"),
    [("poweroff", PowerState.STOPPED), ("deallocate", PowerState.DEALLOCATED)],
)
def test_power_actions_without_ids_act_on_every_instance(
    operator_api: ApiClient, frozen_clock, action: str, settled: str
) -> None:
    factories.scale_set("web", 3)
    response = operator_api.post(f"{SETS}/web/{action}", b"")
    assert response.status_code == 202
    finish_driver_work(frozen_clock)
    assert set(Instance.objects.values_list("power_state", flat=True)) == {settled}
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"

    response = operator_api.post(f"{SETS}/web/start", {"instanceIds": ["*"]})
    finish_driver_work(frozen_clock)
    assert set(Instance.objects.values_list("power_state", flat=True)) == {PowerState.RUNNING}
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"


def test_extension_rolling_upgrade_takes_opted_in_extensions_to_their_newest_r_ext_1(
    operator_api: ApiClient, drive
) -> None:
    extension = {**factories.APP_HEALTH_HTTP, "enable_automatic_upgrade": True}
    factories.scale_set("web", 4, extensions=[extension])
    ExtensionVersion.objects.create(
        publisher=extension["publisher"], type=extension["type"], version="2.1", published_at=clock.now()
    )

    response = operator_api.post(f"{SETS}/web/extensionRollingUpgrade")
    assert response.status_code == 202
    run = drive(UpgradeRun.objects.get())
    assert run.kind == Kind.EXTENSION
    assert run.target_extensions == {"HealthExtension": "2.1"}
    assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "Succeeded"

    again = operator_api.post(f"{SETS}/web/extensionRollingUpgrade")
    assert again.status_code == 409


def test_viewers_cannot_act(viewer_api: ApiClient) -> None:
    factories.outdated_scale_set(4)
    for action in ("osRollingUpgrade", "rollingUpgrades/cancel", "reimage", "start", "poweroff"):
        response = viewer_api.post(f"{SETS}/web/{action}")
        assert response.status_code == 403, action
    assert not UpgradeRun.objects.exists()
    assert not Operation.objects.exists()


def test_an_unknown_operation_is_404(viewer_api: ApiClient) -> None:
    base = f"/subscriptions/{factories.SUBSCRIPTION}/providers/Microsoft.Compute/locations/eastus/operations"
    for name in ("not-a-uuid", "6f1c3c1e-8a8e-4a38-9d55-2f8a1c1d0b7e"):
        response = viewer_api.get(f"{base}/{name}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "OperationNotFound"


@pytest.mark.parametrize("capacity", [4, 40])
def test_polling_an_operation_has_a_fixed_query_count(
    operator_api: ApiClient, django_assert_num_queries, capacity: int
) -> None:  # type: ignore[no-untyped-def]
    factories.scale_set("web", capacity)
    response = operator_api.post(f"{SETS}/web/reimage")
    with django_assert_num_queries(4):  # token, groups, the operation, its instances' due work
        assert poll(operator_api, response["Azure-AsyncOperation"]).json()["status"] == "InProgress"
