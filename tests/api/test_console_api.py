"""The console's own API beyond ARM (SPEC 7 "Beyond ARM", SPEC 8): publishing image and
extension versions, fault profiles, maintenance, and runs with their batches and events.
Same conventions as ARM: api-version, bearer tokens, roles, the error envelope, never a 500."""

from __future__ import annotations

import io
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command

from fleet.models import (
    ExtensionVersion,
    FaultProfile,
    HealthState,
    ImagePublication,
    Instance,
    PlatformImageVersion,
)
from tests import factories
from tests.api.conftest import API_VERSION, ApiClient, api_client_for
from upgrades import services as upgrades
from upgrades.models import RunEvent, UpgradeRun

pytestmark = pytest.mark.django_db

CONSOLE = "/console/api"
SET = f"{CONSOLE}/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test/virtualMachineScaleSets/web"
IMAGE_KEY = "platform:Canonical/UbuntuServer/18.04-LTS:18.04.202501010"


def _send(api: ApiClient, method: str, path: str, body: Any, *, raw: bool = False) -> Any:
    data = body if raw else json.dumps(body)
    return getattr(api.client, method.lower())(
        f"{path}?api-version={API_VERSION}",
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.token}"},
    )


def _post(api: ApiClient, path: str, body: Any) -> Any:
    return _send(api, "POST", path, body)


def _put(api: ApiClient, path: str, body: Any) -> Any:
    return _send(api, "PUT", path, body)


def _image(**changes: Any) -> dict[str, Any]:
    return {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": "18.04.202501010",
        "locations": ["eastus"],
        **changes,
    }


def _extension(**changes: Any) -> dict[str, Any]:
    return {"publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux", "version": "2.1", **changes}


def _nothing_published() -> None:
    assert not PlatformImageVersion.objects.exists()
    assert not ImagePublication.objects.exists()
    assert not ExtensionVersion.objects.exists()
    assert not FaultProfile.objects.exists()


def _regions() -> None:
    factories.region("eastus")
    factories.region("westus")


# --- platform image versions -------------------------------------------------------------------


def test_publish_platform_image_version_with_faults_is_201(operator_api: ApiClient, frozen_clock: Any) -> None:
    """SPEC 7 beyond ARM: publish a platform image version; SPEC 8: its fault knobs."""
    _regions()
    faults = {"neverHealthyShare": 0.25, "provisioningFailureShare": 0.1, "bootSeconds": 90}
    response = _post(
        operator_api, f"{CONSOLE}/platformImageVersions", _image(locations=["WestUS", "eastus"], faults=faults)
    )
    assert response.status_code == 201
    assert response.json() == {
        "publisher": "Canonical",
        "offer": "UbuntuServer",
        "sku": "18.04-LTS",
        "version": "18.04.202501010",
        "publishedIn": [
            {"location": "eastus", "publishedAt": "2026-06-01T12:00:00Z"},
            {"location": "westus", "publishedAt": "2026-06-01T12:00:00Z"},
        ],
        "faults": {"target": IMAGE_KEY, **faults},
    }
    profile = FaultProfile.objects.get()
    assert (profile.target, profile.never_healthy_share, profile.boot_seconds) == (IMAGE_KEY, 0.25, 90)


def test_publishing_again_in_more_locations_is_200_and_adds_them(operator_api: ApiClient) -> None:
    _regions()
    _post(operator_api, f"{CONSOLE}/platformImageVersions", _image())
    response = _post(operator_api, f"{CONSOLE}/platformImageVersions", _image(locations=["westus"]))
    assert response.status_code == 200
    assert [p["location"] for p in response.json()["publishedIn"]] == ["eastus", "westus"]
    assert response.json()["faults"] is None
    assert PlatformImageVersion.objects.count() == 1


def test_platform_image_json_is_what_publish_image_prints(operator_api: ApiClient) -> None:
    """SPEC 7 CLI: the command prints the same JSON as the API."""
    _regions()
    out = io.StringIO()
    call_command(
        "publish_image",
        "--publisher=Canonical",
        "--offer=UbuntuServer",
        "--sku=18.04-LTS",
        "--version=18.04.202501010",
        "--regions=eastus",
        stdout=out,
    )
    body = _post(operator_api, f"{CONSOLE}/platformImageVersions", _image()).json()
    assert body == json.loads(out.getvalue())


@pytest.mark.parametrize(
    ("changes", "target"),
    [
        ({"publisher": None}, "publisher"),
        ({"publisher": 5}, "publisher"),
        ({"publisher": "Can/onical"}, "publisher"),
        ({"publisher": "x" * 101}, "publisher"),
        ({"offer": ""}, "offer"),
        ({"sku": ["18.04-LTS"]}, "sku"),
        ({"version": "latest"}, "version"),
        ({"version": "18.04.x"}, "version"),
        ({"version": 18.04}, "version"),
        ({"locations": None}, "locations"),
        ({"locations": "eastus"}, "locations"),
        ({"locations": []}, "locations"),
        ({"locations": ["eastus", "mars"]}, "locations[1]"),
        ({"locations": ["eastus", 7]}, "locations[1]"),
        ({"faults": "none"}, "faults"),
        ({"faults": {"neverHealthyShare": 1.5}}, "faults.neverHealthyShare"),
        ({"faults": {"neverHealthyShare": "0.5"}}, "faults.neverHealthyShare"),
        ({"faults": {"provisioningFailureShare": -0.1}}, "faults.provisioningFailureShare"),
        ({"faults": {"bootSeconds": 1e308}}, "faults.bootSeconds"),
        ({"faults": {"bootSeconds": 10**400}}, "faults.bootSeconds"),
        ({"faults": {"bootSeconds": True}}, "faults.bootSeconds"),
    ],
)
def test_bad_platform_image_input_is_400_naming_the_field_and_writes_nothing(
    operator_api: ApiClient, changes: dict[str, Any], target: str
) -> None:
    """SPEC 7 errors: never a 500; everything is validated before anything is written."""
    _regions()
    response = _post(operator_api, f"{CONSOLE}/platformImageVersions", _image(**changes))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["target"] == target
    _nothing_published()


def test_viewer_cannot_publish_an_image(viewer_api: ApiClient) -> None:
    _regions()
    assert _post(viewer_api, f"{CONSOLE}/platformImageVersions", _image()).status_code == 403
    _nothing_published()


# --- extension versions ------------------------------------------------------------------------


def test_release_extension_version_is_201_then_200(operator_api: ApiClient, frozen_clock: Any) -> None:
    """R-EXT-1: a release is global; releasing it again changes nothing."""
    faults = {"neverHealthyShare": 0.5}
    first = _post(operator_api, f"{CONSOLE}/extensionVersions", _extension(faults=faults))
    assert first.status_code == 201
    key = "Microsoft.ManagedServices.ApplicationHealthLinux@2.1"
    assert first.json() == {
        "publisher": "Microsoft.ManagedServices",
        "type": "ApplicationHealthLinux",
        "version": "2.1",
        "publishedAt": "2026-06-01T12:00:00Z",
        "key": key,
        "faults": {"target": key, "neverHealthyShare": 0.5, "provisioningFailureShare": 0.0, "bootSeconds": None},
    }
    again = _post(operator_api, f"{CONSOLE}/extensionVersions", _extension())
    assert again.status_code == 200
    assert again.json() == first.json()  # the faults stay as they were
    assert ExtensionVersion.objects.count() == 1


def test_extension_json_is_what_the_command_prints(operator_api: ApiClient) -> None:
    out = io.StringIO()
    call_command(
        "publish_extension_version",
        "--publisher=Microsoft.ManagedServices",
        "--type=ApplicationHealthLinux",
        "--version=2.1",
        stdout=out,
    )
    body = _post(operator_api, f"{CONSOLE}/extensionVersions", _extension()).json()
    printed = json.loads(out.getvalue())
    assert {key: body[key] for key in printed} == printed


@pytest.mark.parametrize(
    ("changes", "target"),
    [
        ({"publisher": None}, "publisher"),
        ({"type": 3}, "type"),
        ({"type": "Application Health"}, "type"),
        ({"version": "two"}, "version"),
        ({"version": None}, "version"),
        ({"faults": []}, "faults"),
        ({"faults": {"provisioningFailureShare": 2}}, "faults.provisioningFailureShare"),
        ({"faults": {"bootSeconds": 3601}}, "faults.bootSeconds"),
    ],
)
def test_bad_extension_input_is_400_naming_the_field_and_writes_nothing(
    operator_api: ApiClient, changes: dict[str, Any], target: str
) -> None:
    response = _post(operator_api, f"{CONSOLE}/extensionVersions", _extension(**changes))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["target"] == target
    _nothing_published()


def test_viewer_cannot_release_an_extension(viewer_api: ApiClient) -> None:
    assert _post(viewer_api, f"{CONSOLE}/extensionVersions", _extension()).status_code == 403
    _nothing_published()


# --- fault profiles ----------------------------------------------------------------------------


def test_fault_profile_put_creates_then_replaces_and_get_reads_it(
    operator_api: ApiClient, viewer_api: ApiClient
) -> None:
    """SPEC 8: per image version, the simulator's knobs; a PUT replaces the whole profile."""
    path = f"{CONSOLE}/faultProfiles/{IMAGE_KEY}"
    created = _put(operator_api, path, {"neverHealthyShare": 0.3, "bootSeconds": 120})
    assert created.status_code == 201
    assert created.json() == {
        "target": IMAGE_KEY,
        "neverHealthyShare": 0.3,
        "provisioningFailureShare": 0.0,
        "bootSeconds": 120.0,
    }
    replaced = _put(operator_api, path, {"provisioningFailureShare": 0.2})
    assert replaced.status_code == 200
    assert viewer_api.get(path).json() == {
        "target": IMAGE_KEY,
        "neverHealthyShare": 0.0,
        "provisioningFailureShare": 0.2,
        "bootSeconds": None,
    }
    assert FaultProfile.objects.count() == 1


@pytest.mark.parametrize(
    "target",
    [
        "gallery:gal/ubuntu:1.0.0",
        "custom:https://images.example/disk.vhd",
        "Microsoft.ManagedServices.ApplicationHealthLinux@2.1",
    ],
)
def test_fault_profiles_take_every_kind_of_key(operator_api: ApiClient, viewer_api: ApiClient, target: str) -> None:
    assert _put(operator_api, f"{CONSOLE}/faultProfiles/{target}", {"neverHealthyShare": 1}).status_code == 201
    assert viewer_api.get(f"{CONSOLE}/faultProfiles/{target}").json()["target"] == target


def test_unknown_fault_profile_is_404(viewer_api: ApiClient) -> None:
    response = viewer_api.get(f"{CONSOLE}/faultProfiles/{IMAGE_KEY}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"


@pytest.mark.parametrize(
    ("target", "body", "field"),
    [
        (IMAGE_KEY, {"neverHealthyShare": 2}, "neverHealthyShare"),
        (IMAGE_KEY, {"neverHealthyShare": "half"}, "neverHealthyShare"),
        (IMAGE_KEY, {"provisioningFailureShare": -1}, "provisioningFailureShare"),
        (IMAGE_KEY, {"bootSeconds": 4000}, "bootSeconds"),
        (IMAGE_KEY, {"bootSeconds": -1}, "bootSeconds"),
        ("nonsense", {}, "target"),
        ("platform:Canonical/UbuntuServer:1.0", {}, "target"),
        ("platform:Canonical/UbuntuServer/18.04-LTS:latest", {}, "target"),
        ("Microsoft.Foo@one", {}, "target"),
        ("x" * 401, {}, "target"),
    ],
)
def test_bad_fault_profile_is_400_naming_the_field(
    operator_api: ApiClient, target: str, body: dict[str, Any], field: str
) -> None:
    response = _put(operator_api, f"{CONSOLE}/faultProfiles/{target}", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["target"] == field
    assert not FaultProfile.objects.exists()


def test_viewer_reads_fault_profiles_but_cannot_write_them(viewer_api: ApiClient) -> None:
    FaultProfile.objects.create(target=IMAGE_KEY, never_healthy_share=0.5)
    assert viewer_api.get(f"{CONSOLE}/faultProfiles/{IMAGE_KEY}").status_code == 200
    assert _put(viewer_api, f"{CONSOLE}/faultProfiles/{IMAGE_KEY}", {"neverHealthyShare": 0}).status_code == 403
    assert FaultProfile.objects.get().never_healthy_share == 0.5
    assert api_client_for("no-role").get(f"{CONSOLE}/faultProfiles/{IMAGE_KEY}").status_code == 403


def test_a_fault_profile_set_through_the_api_faults_the_upgrade(operator_api: ApiClient, drive: Any) -> None:
    """SPEC 8: a profile set before the version is published applies when a run reaches it."""
    _put(operator_api, f"{CONSOLE}/faultProfiles/{factories.NEW_KEY}", {"neverHealthyShare": 1})
    scale_set = factories.outdated_scale_set(4)
    run = drive(upgrades.os_upgrade_now(scale_set=scale_set))
    assert run.status == "Faulted"


# --- maintenance -------------------------------------------------------------------------------


def test_maintenance_makes_chosen_instances_unhealthy_then_ends(operator_api: ApiClient) -> None:
    """SPEC 8: per set, maintenance makes chosen instances unhealthy."""
    factories.scale_set("web", 5)
    response = _post(operator_api, f"{SET}/maintenance", {"instanceIds": ["3", 0], "on": True})
    assert response.status_code == 200
    assert response.json() == {"instanceIds": ["0", "3"], "underMaintenance": True}
    chosen = Instance.objects.filter(under_maintenance=True)
    assert sorted(chosen.values_list("instance_id", flat=True)) == [0, 3]
    assert set(chosen.values_list("health_state", flat=True)) == {HealthState.UNHEALTHY}

    ended = _post(operator_api, f"{SET}/maintenance", {"instanceIds": "*", "on": False})
    assert ended.json() == {"instanceIds": ["0", "1", "2", "3", "4"], "underMaintenance": False}
    assert not Instance.objects.filter(under_maintenance=True).exists()


def test_maintenance_on_an_unknown_set_is_404(operator_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    path = SET.replace("/web", "/ghost")
    response = _post(operator_api, f"{path}/maintenance", {"instanceIds": ["0"], "on": True})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"


@pytest.mark.parametrize(
    ("body", "target"),
    [
        ({"on": True}, "instanceIds"),
        ({"instanceIds": "3", "on": True}, "instanceIds"),
        ({"instanceIds": [], "on": True}, "instanceIds"),
        ({"instanceIds": {"0": True}, "on": True}, "instanceIds"),
        ({"instanceIds": [True], "on": True}, "instanceIds[0]"),
        ({"instanceIds": ["0", {"id": 1}], "on": True}, "instanceIds[1]"),
        ({"instanceIds": ["9" * 30], "on": True}, "instanceIds[0]"),
        ({"instanceIds": ["x"], "on": True}, "instanceIds"),
        ({"instanceIds": ["0", "99"], "on": True}, "instanceIds"),
        ({"instanceIds": ["0"]}, "on"),
        ({"instanceIds": ["0"], "on": "yes"}, "on"),
        ({"instanceIds": ["0"], "on": 1}, "on"),
    ],
)
def test_bad_maintenance_input_is_400_and_changes_nothing(
    operator_api: ApiClient, body: dict[str, Any], target: str
) -> None:
    factories.scale_set("web", 2)
    response = _post(operator_api, f"{SET}/maintenance", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["target"] == target
    assert not Instance.objects.filter(under_maintenance=True).exists()


def test_viewer_cannot_start_maintenance(viewer_api: ApiClient) -> None:
    factories.scale_set("web", 2)
    assert _post(viewer_api, f"{SET}/maintenance", {"instanceIds": "*", "on": True}).status_code == 403
    assert not Instance.objects.filter(under_maintenance=True).exists()


# --- every write, against malformed bodies -----------------------------------------------------

WRITES = [
    ("POST", f"{CONSOLE}/platformImageVersions"),
    ("POST", f"{CONSOLE}/extensionVersions"),
    ("PUT", f"{CONSOLE}/faultProfiles/{IMAGE_KEY}"),
    ("POST", f"{SET}/maintenance"),
]
MALFORMED = [
    b"",
    b"[]",
    b'["publisher"]',
    b'"publisher"',
    b"null",
    b"true",
    b"1e999",
    b"{",
    b'{"publisher": }',
    b"[" * 50_000 + b"]" * 50_000,
    b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
    b"\xff\xfe\x00",
]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_are_400_at_the_root_and_write_nothing(
    operator_api: ApiClient, method: str, path: str, body: bytes
) -> None:
    """SPEC 7 errors: whatever the body, a 4xx in ARM's envelope, never a 500, nothing written."""
    factories.scale_set("web", 2)
    before = (PlatformImageVersion.objects.count(), ImagePublication.objects.count())
    response = _send(operator_api, method, path, body, raw=True)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["target"] == "$"
    assert (PlatformImageVersion.objects.count(), ImagePublication.objects.count()) == before
    assert not ExtensionVersion.objects.exists()
    assert not FaultProfile.objects.exists()
    assert not Instance.objects.filter(under_maintenance=True).exists()


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_writes_need_an_api_version_and_a_token(operator_api: ApiClient, method: str, path: str) -> None:
    factories.scale_set("web", 2)
    no_version = getattr(operator_api.client, method.lower())(
        path, b"{}", content_type="application/json", headers={"Authorization": f"Bearer {operator_api.token}"}
    )
    assert no_version.status_code == 400
    assert no_version.json()["error"]["code"] == "MissingApiVersionParameter"
    assert _send(ApiClient(None), method, path, {}).status_code == 401


def test_unknown_console_paths_answer_arm_404(viewer_api: ApiClient) -> None:
    response = viewer_api.get(f"{CONSOLE}/nothingHere")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "InvalidResourceType"


# --- runs ----------------------------------------------------------------------------------------


def _follow(api: ApiClient, path: str) -> list[dict[str, Any]]:
    """Every page of a list, following nextLink; returns the pages' bodies."""
    pages = [api.get(path).json()]
    while "nextLink" in pages[-1]:
        link = urlsplit(pages[-1]["nextLink"])
        query = {key: values[0] for key, values in parse_qs(link.query).items()}
        pages.append(api.get(link.path, api_version=None, **query).json())
        assert len(pages) < 50
    return pages


def test_run_detail_has_batches_with_their_instances(viewer_api: ApiClient, drive: Any) -> None:
    scale_set = factories.outdated_scale_set(6)
    run = drive(upgrades.os_upgrade_now(scale_set=scale_set))
    body = viewer_api.get(f"{CONSOLE}/runs/{run.pk}").json()
    assert body["id"] == run.pk
    assert body["scaleSet"] == {"id": scale_set.resource_id, "name": "web"}
    assert (body["kind"], body["status"], body["phase"]) == (run.kind, "Completed", "done")
    assert body["startedBy"] == "User"
    assert body["target"]["image"] == factories.NEW_KEY
    assert body["policy"]["maxBatchInstancePercent"] == 20
    assert body["counts"]["successful"] == 6
    assert body["error"] is None
    batches = body["batches"]
    assert [b["index"] for b in batches] == list(range(run.batch_count))
    assert all(b["status"] == "Succeeded" and b["startedAt"] and b["endedAt"] for b in batches)
    assert all(len(b["instanceIds"]) == b["size"] for b in batches)
    assert sorted(int(i) for b in batches for i in b["instanceIds"]) == list(range(6))


@pytest.mark.parametrize("run_id", ["999", "abc", "9" * 40])
def test_unknown_run_is_404(viewer_api: ApiClient, run_id: str) -> None:
    response = viewer_api.get(f"{CONSOLE}/runs/{run_id}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"
    assert viewer_api.get(f"{CONSOLE}/runs/{run_id}/events").status_code == 404


def test_run_events_page_oldest_first_through_next_link(viewer_api: ApiClient, drive: Any, settings: Any) -> None:
    scale_set = factories.outdated_scale_set(4)
    run = drive(upgrades.os_upgrade_now(scale_set=scale_set))
    settings.API_PAGE_SIZE = 5
    pages = _follow(viewer_api, f"{CONSOLE}/runs/{run.pk}/events")
    assert len(pages) > 1
    events = [event for page in pages for event in page["value"]]
    assert [e["id"] for e in events] == list(
        RunEvent.objects.filter(run=run).order_by("pk").values_list("pk", flat=True)
    )
    first = events[0]
    assert set(first) >= {"id", "at", "batchIndex", "fromState", "toState", "message"}
    assert any("instanceId" in event for event in events)
    bad = viewer_api.get(f"{CONSOLE}/runs/{run.pk}/events", **{"$skiptoken": "later"})
    assert bad.status_code == 400
    assert bad.json()["error"]["target"] == "$skiptoken"


def test_scale_set_runs_list_newest_first_and_page(viewer_api: ApiClient, drive: Any, settings: Any) -> None:
    scale_set = factories.outdated_scale_set(2)
    runs = []
    for _ in range(3):
        runs.append(drive(upgrades.os_upgrade_now(scale_set=scale_set)))
        scale_set.instances.update(os_image=factories.OLD_KEY)  # back on the old image for the next one
    settings.API_PAGE_SIZE = 2
    pages = _follow(viewer_api, f"{SET}/runs")
    assert [len(page["value"]) for page in pages] == [2, 1]
    assert [run["id"] for page in pages for run in page["value"]] == [r.pk for r in reversed(runs)]
    assert "batches" not in pages[0]["value"][0]


def test_runs_of_an_unknown_set_are_404(viewer_api: ApiClient) -> None:
    response = viewer_api.get(SET.replace("/web", "/ghost") + "/runs")
    assert response.status_code == 404


def test_run_reads_need_a_console_role(drive: Any) -> None:
    run = drive(upgrades.os_upgrade_now(scale_set=factories.outdated_scale_set(2)))
    outsider = api_client_for("no-role")
    assert outsider.get(f"{CONSOLE}/runs/{run.pk}").status_code == 403
    assert outsider.get(f"{SET}/runs").status_code == 403
    assert ApiClient(None).get(f"{CONSOLE}/runs/{run.pk}/events").status_code == 401


@pytest.mark.parametrize(("suffix", "most"), [("", 5), ("/events", 4)])
def test_run_reads_cost_a_fixed_number_of_queries(
    viewer_api: ApiClient, drive: Any, django_assert_max_num_queries: Any, suffix: str, most: int
) -> None:
    run = drive(upgrades.os_upgrade_now(scale_set=factories.outdated_scale_set(12)))
    viewer_api.get(f"{CONSOLE}/runs/{run.pk}{suffix}")  # the token's last use is recorded once a minute
    with django_assert_max_num_queries(most):  # token, groups, the run, then batches and outcomes, or events
        assert viewer_api.get(f"{CONSOLE}/runs/{run.pk}{suffix}").status_code == 200


def test_scale_set_runs_cost_a_fixed_number_of_queries(
    viewer_api: ApiClient, drive: Any, django_assert_max_num_queries: Any
) -> None:
    scale_set = factories.outdated_scale_set(4)
    for _ in range(3):
        drive(upgrades.os_upgrade_now(scale_set=scale_set))
        scale_set.instances.update(os_image=factories.OLD_KEY)
    viewer_api.get(f"{SET}/runs")
    with django_assert_max_num_queries(4):  # token, groups, the set, the runs with their actors
        assert viewer_api.get(f"{SET}/runs").status_code == 200
    assert UpgradeRun.objects.count() == 3
