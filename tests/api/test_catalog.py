"""The image catalog and gallery image versions over ARM (SPEC 7): the shapes `az vm image` and
the Azure SDK read, 404s, strict validation of PUT bodies, roles, and pinned query counts."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import azure.mgmt.compute as azure_compute
import azure.mgmt.compute.models as sdk
import pytest
from django.core.management import call_command

from api.tokens import token_create
from fleet import clock, services
from fleet.models import (
    Gallery,
    GalleryImage,
    GalleryImageReplica,
    GalleryImageVersion,
    SupportedOsSku,
)
from tests import factories
from tests.api.conftest import API_VERSION, ApiClient, api_client_for
from tests.api.test_sdk_contract import ConsoleTokenCredential, LoopbackBearerPolicy

pytestmark = pytest.mark.django_db

SUB = factories.SUBSCRIPTION
CATALOG = f"/subscriptions/{SUB}/providers/Microsoft.Compute/locations"
UBUNTU = "publishers/Canonical/artifacttypes/vmimage/offers/UbuntuServer/skus/18.04-LTS"
CATALOG_ID = f"/Subscriptions/{SUB}/Providers/Microsoft.Compute/Locations"
GROUP = f"/subscriptions/{SUB}/resourceGroups"
GALLERIES = "providers/Microsoft.Compute/galleries"
GALLERY = f"{GROUP}/rg-test/{GALLERIES}/gal/images/ubuntu"
EARLY, MIDDLE, LATE = "18.04.9", factories.OLD_VERSION, factories.NEW_VERSION  # numeric order; not string order


def _catalog() -> None:
    """Ubuntu 18.04 in three versions (eastus) and one (westus), one not out yet, a jammy
    offer and a Windows image; centralus is known but has nothing published."""
    east, west = factories.region("eastus"), factories.region("westus")
    factories.region("centralus")
    for version in (LATE, EARLY, MIDDLE):
        factories.publish(version, east)
    factories.publish(MIDDLE, west)
    factories.publish("18.04.999999999", east, at=clock.now() + dt.timedelta(days=1))  # not out yet
    factories.publish("22.04.202401010", east, image_offer="0001-com-ubuntu-server-jammy", image_sku="22_04-lts")
    factories.publish(
        "17763.1.1",
        east,
        image_publisher="MicrosoftWindowsServer",
        image_offer="WindowsServer",
        image_sku="2019-Datacenter",
    )


def _ids(body: list[dict[str, Any]]) -> list[str]:
    return [entry["id"] for entry in body]


# --- the image catalog ---------------------------------------------------------------------------


def test_publishers_are_a_bare_array_with_azure_ids(viewer_api: ApiClient) -> None:
    """SPEC 7 image catalog: bare arrays of {name, location, id}, as `az vm image list` reads."""
    _catalog()
    response = viewer_api.get(f"{CATALOG}/eastus/publishers")
    assert response.status_code == 200
    assert response.json() == [
        {"name": "Canonical", "location": "eastus", "id": f"{CATALOG_ID}/eastus/Publishers/Canonical"},
        {
            "name": "MicrosoftWindowsServer",
            "location": "eastus",
            "id": f"{CATALOG_ID}/eastus/Publishers/MicrosoftWindowsServer",
        },
    ]


def test_location_matches_case_insensitively_and_answers_with_its_own_name(viewer_api: ApiClient) -> None:
    _catalog()
    body = viewer_api.get(f"{CATALOG}/WestUS/publishers").json()
    assert body == [{"name": "Canonical", "location": "westus", "id": f"{CATALOG_ID}/westus/Publishers/Canonical"}]


def test_unknown_location_is_404_location_not_available(viewer_api: ApiClient) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/atlantis/publishers")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "LocationNotAvailableForResourceType"
    assert "'atlantis'" in error["message"]
    assert "centralus,eastus,westus" in error["message"]


def test_known_location_with_nothing_published_lists_nothing(viewer_api: ApiClient) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/centralus/publishers")
    assert response.status_code == 200
    assert response.json() == []


def test_offers_of_a_publisher_matched_case_insensitively(viewer_api: ApiClient) -> None:
    _catalog()
    body = viewer_api.get(f"{CATALOG}/eastus/publishers/canonical/artifacttypes/vmimage/offers").json()
    assert [entry["name"] for entry in body] == ["0001-com-ubuntu-server-jammy", "UbuntuServer"]
    assert body[1]["id"] == f"{CATALOG_ID}/eastus/Publishers/Canonical/ArtifactTypes/VMImage/Offers/UbuntuServer"
    assert {entry["location"] for entry in body} == {"eastus"}


def test_unknown_publisher_is_404(viewer_api: ApiClient) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/eastus/publishers/Nobody/artifacttypes/vmimage/offers")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"
    assert "Nobody" in response.json()["error"]["message"]


def test_skus_of_an_offer(viewer_api: ApiClient) -> None:
    _catalog()
    body = viewer_api.get(f"{CATALOG}/eastus/publishers/Canonical/artifacttypes/vmimage/offers/ubuntuserver/skus")
    assert body.json() == [
        {
            "name": "18.04-LTS",
            "location": "eastus",
            "id": f"{CATALOG_ID}/eastus/Publishers/Canonical/ArtifactTypes/VMImage/Offers/UbuntuServer/Skus/18.04-LTS",
        }
    ]


def test_unknown_offer_is_404(viewer_api: ApiClient) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/eastus/publishers/Canonical/artifacttypes/vmimage/offers/Nope/skus")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_versions_are_in_version_order_and_only_those_out_in_that_location(viewer_api: ApiClient) -> None:
    """Numeric order (18.04.9 before 18.04.202301010); a version not yet out, or published only
    elsewhere, is not listed."""
    _catalog()
    east = viewer_api.get(f"{CATALOG}/eastus/{UBUNTU}/versions").json()
    assert [entry["name"] for entry in east] == [EARLY, MIDDLE, LATE]
    assert east[0]["id"] == (
        f"{CATALOG_ID}/eastus/Publishers/Canonical/ArtifactTypes/VMImage/Offers/UbuntuServer/Skus/18.04-LTS"
        f"/Versions/{EARLY}"
    )
    west = viewer_api.get(f"{CATALOG}/westus/{UBUNTU}/versions").json()
    assert [entry["name"] for entry in west] == [MIDDLE]


def test_versions_take_top_and_orderby_name_desc(viewer_api: ApiClient) -> None:
    _catalog()
    path = f"{CATALOG}/eastus/{UBUNTU}/versions"
    assert [e["name"] for e in viewer_api.get(path, **{"$top": "2"}).json()] == [EARLY, MIDDLE]
    newest = viewer_api.get(path, **{"$top": "1", "$orderby": "name desc"}).json()
    assert [e["name"] for e in newest] == [LATE]
    assert [e["name"] for e in viewer_api.get(path, **{"$orderby": "Name ASC"}).json()] == [EARLY, MIDDLE, LATE]


@pytest.mark.parametrize(
    ("params", "target"),
    [
        ({"$top": "0"}, "$top"),
        ({"$top": "-1"}, "$top"),
        ({"$top": "ten"}, "$top"),
        ({"$top": "9" * 30}, "$top"),
        ({"$orderby": "version desc"}, "$orderby"),
        ({"$orderby": "name sideways"}, "$orderby"),
    ],
)
def test_bad_top_or_orderby_is_400_naming_it(viewer_api: ApiClient, params: dict[str, str], target: str) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/eastus/{UBUNTU}/versions", **params)
    assert response.status_code == 400
    assert response.json()["error"]["target"] == target


def test_unknown_sku_is_404(viewer_api: ApiClient) -> None:
    _catalog()
    path = f"{CATALOG}/eastus/publishers/Canonical/artifacttypes/vmimage/offers/UbuntuServer/skus/99.04/versions"
    assert viewer_api.get(path).status_code == 404


def test_version_is_a_virtual_machine_image(viewer_api: ApiClient) -> None:
    _catalog()
    assert SupportedOsSku.objects.filter(offer="UbuntuServer", sku="18.04-LTS").exists()  # seeded (R-AUTO-1)
    body = viewer_api.get(f"{CATALOG}/eastus/{UBUNTU}/versions/{MIDDLE}").json()
    assert body == {
        "name": MIDDLE,
        "location": "eastus",
        "id": (
            f"{CATALOG_ID}/eastus/Publishers/Canonical/ArtifactTypes/VMImage/Offers/UbuntuServer/Skus/18.04-LTS"
            f"/Versions/{MIDDLE}"
        ),
        "properties": {
            "osDiskImage": {"operatingSystem": "Linux"},
            "dataDiskImages": [],
            "automaticOSUpgradeProperties": {"automaticOSUpgradeSupported": True},
        },
    }
    image = sdk.VirtualMachineImage(body)  # the SDK's own model reads every field
    assert image.properties.os_disk_image.operating_system == "Linux"
    assert image.properties.automatic_os_upgrade_properties.automatic_os_upgrade_supported is True


def test_windows_image_reads_as_windows(viewer_api: ApiClient) -> None:
    _catalog()
    path = f"{CATALOG}/eastus/publishers/MicrosoftWindowsServer/artifacttypes/vmimage/offers/WindowsServer"
    body = viewer_api.get(f"{path}/skus/2019-Datacenter/versions/17763.1.1").json()
    assert body["properties"]["osDiskImage"] == {"operatingSystem": "Windows"}


def test_automatic_os_upgrade_support_follows_the_supported_sku_table(viewer_api: ApiClient) -> None:
    """R-AUTO-1: an image the supported OS SKU table does not list does not support it."""
    _catalog()
    SupportedOsSku.objects.filter(offer="UbuntuServer", sku="18.04-LTS").delete()
    body = viewer_api.get(f"{CATALOG}/eastus/{UBUNTU}/versions/{MIDDLE}").json()
    assert body["properties"]["automaticOSUpgradeProperties"] == {"automaticOSUpgradeSupported": False}


def test_unknown_version_is_404(viewer_api: ApiClient) -> None:
    _catalog()
    response = viewer_api.get(f"{CATALOG}/eastus/{UBUNTU}/versions/18.04.1")
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("Artifact: VMImage was not found")
    assert viewer_api.get(f"{CATALOG}/westus/{UBUNTU}/versions/{LATE}").status_code == 404  # not out there


def test_catalog_needs_a_console_role_and_an_api_version(viewer_api: ApiClient) -> None:
    """SPEC 7: api-version is required; reads need viewers, operators or staff."""
    _catalog()
    assert viewer_api.get(f"{CATALOG}/eastus/publishers", api_version=None).status_code == 400
    assert api_client_for("nobody-role").get(f"{CATALOG}/eastus/publishers").status_code == 403
    assert ApiClient(None).get(f"{CATALOG}/eastus/publishers").status_code == 401


@pytest.mark.parametrize(
    "path",
    [
        "eastus/publishers",
        "eastus/publishers/Canonical/artifacttypes/vmimage/offers",
        "eastus/publishers/Canonical/artifacttypes/vmimage/offers/UbuntuServer/skus",
        f"eastus/{UBUNTU}/versions",
        f"eastus/{UBUNTU}/versions/{MIDDLE}",
    ],
)
def test_catalog_reads_cost_at_most_two_queries(
    viewer_api: ApiClient, path: str, django_assert_max_num_queries: Any
) -> None:
    _catalog()
    viewer_api.get(f"{CATALOG}/{path}")  # the token's last use is recorded once a minute
    with django_assert_max_num_queries(4):  # token, groups, then the catalog's one or two
        assert viewer_api.get(f"{CATALOG}/{path}").status_code == 200


# --- gallery image versions ---------------------------------------------------------------------


def _gallery() -> GalleryImage:
    east = factories.region("eastus")
    factories.region("westus")
    factories.region("centralus")
    gallery = Gallery.objects.create(subscription_id=SUB, resource_group="rg-test", name="gal", region=east)
    return GalleryImage.objects.create(gallery=gallery, name="ubuntu", os_type="Linux")


def _put(api: ApiClient, path: str, body: Any, *, raw: bool = False) -> Any:
    data = body if raw else json.dumps(body)
    return api.client.put(
        f"{path}?api-version={API_VERSION}",
        data,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api.token}"},
    )


def _version_body(*regions: str, **profile: Any) -> dict[str, Any]:
    publishing: dict[str, Any] = {"targetRegions": [{"name": name} for name in regions], **profile}
    return {"location": "eastus", "properties": {"publishingProfile": publishing}}


def _nothing_written() -> None:
    assert not GalleryImageVersion.objects.exists()
    assert not GalleryImageReplica.objects.exists()


def test_put_creates_a_version_answering_201_with_the_arm_shape(operator_api: ApiClient, frozen_clock: Any) -> None:
    """SPEC 7 gallery image versions: publishingProfile.targetRegions, excludeFromLatest."""
    _gallery()
    response = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", "WestUS"))
    assert response.status_code == 201
    body = response.json()
    assert body == {
        "id": f"{GALLERY}/versions/1.0.0",
        "name": "1.0.0",
        "type": "Microsoft.Compute/galleries/images/versions",
        "location": "eastus",
        "properties": {
            "publishingProfile": {
                "targetRegions": [
                    {"name": "eastus", "regionalReplicaCount": 1},
                    {"name": "westus", "regionalReplicaCount": 1},
                ],
                "excludeFromLatest": False,
                "publishedDate": "2026-06-01T12:00:00Z",
            },
            "provisioningState": "Succeeded",
            "replicationStatus": {
                "aggregatedState": "Completed",
                "summary": [
                    {"region": "eastus", "state": "Completed", "progress": 100},
                    {"region": "westus", "state": "Completed", "progress": 100},
                ],
            },
        },
    }
    version = GalleryImageVersion.objects.get()
    assert sorted(version.replicas.values_list("region__name", flat=True)) == ["eastus", "westus"]


def test_version_shape_deserializes_with_the_azure_sdk_model(operator_api: ApiClient) -> None:
    _gallery()
    body = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", excludeFromLatest=True)).json()
    version = sdk.GalleryImageVersion(body)
    assert version.name == "1.0.0"
    assert version.location == "eastus"
    profile = version.properties.publishing_profile
    assert [(r.name, r.regional_replica_count) for r in profile.target_regions] == [("eastus", 1)]
    assert profile.exclude_from_latest is True
    assert isinstance(profile.published_date, dt.datetime)
    assert version.properties.provisioning_state == "Succeeded"
    status = version.properties.replication_status
    assert status.aggregated_state == sdk.AggregatedReplicationState.COMPLETED
    assert status.summary[0].state == sdk.ReplicationState.COMPLETED
    assert status.summary[0].progress == 100


def test_replication_seconds_simulates_replication_until_done(
    operator_api: ApiClient, viewer_api: ApiClient, frozen_clock: Any, time_scale_1: Any
) -> None:
    """`replicationSeconds` (not ARM) is the simulated time each replica takes (SPEC 8)."""
    _gallery()
    body = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", replicationSeconds=600)).json()
    assert body["properties"]["replicationStatus"] == {
        "aggregatedState": "InProgress",
        "summary": [{"region": "eastus", "state": "Replicating", "progress": 0}],
    }
    frozen_clock.advance(600)
    services.gallery_replication_advance(clock.now())
    after = viewer_api.get(f"{GALLERY}/versions/1.0.0").json()
    assert after["properties"]["replicationStatus"]["aggregatedState"] == "Completed"


def test_target_regions_default_to_the_gallerys_region(operator_api: ApiClient) -> None:
    _gallery()
    body = {"location": "EastUS", "properties": {}}
    response = _put(operator_api, f"{GALLERY}/versions/1.0.0", body)
    assert response.status_code == 201
    assert response.json()["properties"]["publishingProfile"]["targetRegions"] == [
        {"name": "eastus", "regionalReplicaCount": 1}
    ]


def test_names_in_the_path_match_case_insensitively(operator_api: ApiClient) -> None:
    _gallery()
    path = f"/subscriptions/{SUB}/resourceGroups/RG-TEST/providers/Microsoft.Compute/galleries/GAL/images/Ubuntu"
    response = _put(operator_api, f"{path}/versions/1.0.0", _version_body("eastus"))
    assert response.status_code == 201
    assert response.json()["id"] == f"{GALLERY}/versions/1.0.0"  # the names as stored


def test_re_put_of_the_same_version_is_200_and_changes_nothing(operator_api: ApiClient) -> None:
    """Clients retry PUTs: the same body again answers 200 with the version as it is."""
    _gallery()
    first = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", "westus")).json()
    again = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("westus", "eastus", replicationSeconds=60))
    assert again.status_code == 200
    assert again.json() == first
    assert GalleryImageReplica.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (_version_body("eastus", "westus", "centralus"), "properties.publishingProfile.targetRegions"),
        (_version_body("eastus"), "properties.publishingProfile.targetRegions"),
        (_version_body("eastus", "westus", excludeFromLatest=True), "properties.publishingProfile.excludeFromLatest"),
    ],
)
def test_re_put_that_changes_the_version_is_refused_with_409(
    operator_api: ApiClient, body: dict[str, Any], target: str
) -> None:
    """Decision: an existing version's replication is not changed by a PUT; it is refused,
    not half applied (see api.catalog)."""
    _gallery()
    _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", "westus"))
    response = _put(operator_api, f"{GALLERY}/versions/1.0.0", body)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "PropertyChangeNotAllowed"
    assert response.json()["error"]["target"] == target
    assert GalleryImageReplica.objects.count() == 2
    assert GalleryImageVersion.objects.get().exclude_from_latest is False


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        (f"{GROUP}/rg-test/{GALLERIES}/nope/images/ubuntu", "galleries/nope"),
        (f"{GROUP}/rg-test/{GALLERIES}/gal/images/nope", "images/gal/nope"),
        (f"{GROUP}/rg-other/{GALLERIES}/gal/images/ubuntu", "galleries/gal"),
    ],
)
def test_put_to_an_unknown_gallery_or_image_is_404(operator_api: ApiClient, path: str, resource: str) -> None:
    _gallery()
    response = _put(operator_api, f"{path}/versions/1.0.0", _version_body("eastus"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "ResourceNotFound"
    assert resource in response.json()["error"]["message"]
    _nothing_written()


TARGET_REGIONS = "properties.publishingProfile.targetRegions"
PROFILE = "properties.publishingProfile"


@pytest.mark.parametrize(
    ("body", "target"),
    [
        (b"", "$"),
        (b"[]", "$"),
        (b'"a string"', "$"),
        (b"null", "$"),
        (b"42", "$"),
        (b"{", "$"),
        (b"[" * 50_000 + b"]" * 50_000, "$"),
        (b"\xff\xfe", "$"),
        (b"{}", "location"),
        (b'{"location": null, "properties": {}}', "location"),
        (b'{"location": 5, "properties": {}}', "location"),
        (b'{"location": "westus", "properties": {}}', "location"),
        (b'{"location": "eastus"}', "properties"),
        (b'{"location": "eastus", "properties": []}', "properties"),
        (b'{"location": "eastus", "properties": {"publishingProfile": "x"}}', PROFILE),
        (b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": {}}}}', TARGET_REGIONS),
        (b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": []}}}', TARGET_REGIONS),
        (b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": "eastus"}}}', TARGET_REGIONS),
        (json.dumps(_version_body("eastus", "mars")).encode(), f"{TARGET_REGIONS}[1].name"),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": '
            b'[{"name": "eastus"}, "westus"]}}}',
            f"{TARGET_REGIONS}[1]",
        ),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": [{"name": null}]}}}',
            f"{TARGET_REGIONS}[0].name",
        ),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": [{"name": ["eastus"]}]}}}',
            f"{TARGET_REGIONS}[0].name",
        ),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": '
            b'[{"name": "eastus", "regionalReplicaCount": 3}]}}}',
            f"{TARGET_REGIONS}[0].regionalReplicaCount",
        ),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"targetRegions": '
            b'[{"name": "eastus", "regionalReplicaCount": 1e400}]}}}',
            f"{TARGET_REGIONS}[0].regionalReplicaCount",
        ),
        (json.dumps(_version_body("eastus", excludeFromLatest="yes")).encode(), f"{PROFILE}.excludeFromLatest"),
        (json.dumps(_version_body("eastus", excludeFromLatest=0)).encode(), f"{PROFILE}.excludeFromLatest"),
        (json.dumps(_version_body("eastus", replicationSeconds=-1)).encode(), f"{PROFILE}.replicationSeconds"),
        (json.dumps(_version_body("eastus", replicationSeconds=1e308)).encode(), f"{PROFILE}.replicationSeconds"),
        (json.dumps(_version_body("eastus", replicationSeconds=10**30)).encode(), f"{PROFILE}.replicationSeconds"),
        (json.dumps(_version_body("eastus", replicationSeconds="10")).encode(), f"{PROFILE}.replicationSeconds"),
        (json.dumps(_version_body("eastus", replicationSeconds=True)).encode(), f"{PROFILE}.replicationSeconds"),
        (
            b'{"location": "eastus", "properties": {"publishingProfile": {"replicationSeconds": NaN}}}',
            f"{PROFILE}.replicationSeconds",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field_and_write_nothing(
    operator_api: ApiClient, body: bytes, target: str
) -> None:
    """SPEC 7 errors: never a 500 for bad input; `target` is the offending field's JSON path."""
    _gallery()
    response = _put(operator_api, f"{GALLERY}/versions/1.0.0", body, raw=True)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["target"] == target
    assert error["message"]
    _nothing_written()


@pytest.mark.parametrize("name", ["1.0", "1.0.0.0", "latest", "v1.0.0"])
def test_a_version_name_that_is_not_major_minor_patch_is_400(operator_api: ApiClient, name: str) -> None:
    _gallery()
    response = _put(operator_api, f"{GALLERY}/versions/{name}", _version_body("eastus"))
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "name"
    _nothing_written()


def test_viewer_cannot_put_a_version(viewer_api: ApiClient) -> None:
    """SPEC 5 roles: viewers read, operators act."""
    _gallery()
    response = _put(viewer_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "AuthorizationFailed"
    _nothing_written()


def test_get_a_version_and_its_404(operator_api: ApiClient, viewer_api: ApiClient) -> None:
    _gallery()
    created = _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus")).json()
    assert viewer_api.get(f"{GALLERY}/versions/1.0.0").json() == created
    missing = viewer_api.get(f"{GALLERY}/versions/2.0.0")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "ResourceNotFound"


def test_other_methods_are_405_with_allow(operator_api: ApiClient) -> None:
    _gallery()
    response = operator_api.client.delete(
        f"{GALLERY}/versions/1.0.0?api-version={API_VERSION}", headers={"Authorization": f"Bearer {operator_api.token}"}
    )
    assert response.status_code == 405
    assert response["Allow"] == "GET, PUT"


def test_versions_list_pages_through_next_link(operator_api: ApiClient, viewer_api: ApiClient, settings: Any) -> None:
    settings.API_PAGE_SIZE = 2
    _gallery()
    for name in ("1.0.0", "1.1.0", "2.0.0"):
        _put(operator_api, f"{GALLERY}/versions/{name}", _version_body("eastus"))
    first = viewer_api.get(f"{GALLERY}/versions").json()
    assert [v["name"] for v in first["value"]] == ["1.0.0", "1.1.0"]
    skiptoken = first["nextLink"].split("$skiptoken=")[1]
    second = viewer_api.get(f"{GALLERY}/versions", **{"$skiptoken": skiptoken}).json()
    assert [v["name"] for v in second["value"]] == ["2.0.0"]
    assert "nextLink" not in second
    assert viewer_api.get(f"{GALLERY}/versions", **{"$skiptoken": "9" * 40}).status_code == 400


def test_api_json_is_what_the_cli_prints(viewer_api: ApiClient, frozen_clock: Any, time_scale_1: Any) -> None:
    """SPEC 7 CLI: the command prints the same JSON as the API."""
    _gallery()
    out = io.StringIO()
    call_command(
        "publish_gallery_image_version",
        "--gallery=gal",
        "--image=ubuntu",
        "--version=1.2.0",
        "--target-regions=westus,eastus",
        "--replication-seconds=30",
        stdout=out,
    )
    assert viewer_api.get(f"{GALLERY}/versions/1.2.0").json() == json.loads(out.getvalue())


def test_get_version_costs_a_fixed_number_of_queries(
    operator_api: ApiClient, viewer_api: ApiClient, django_assert_max_num_queries: Any
) -> None:
    _gallery()
    _put(operator_api, f"{GALLERY}/versions/1.0.0", _version_body("eastus", "westus", "centralus"))
    viewer_api.get(f"{GALLERY}/versions/1.0.0")
    with django_assert_max_num_queries(5):  # token, groups, image, version, replicas
        assert viewer_api.get(f"{GALLERY}/versions/1.0.0").status_code == 200


# --- the SDK over loopback -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_azure_sdk_walks_the_catalog_and_publishes_a_gallery_version(live_server: Any) -> None:
    """Contract (SPEC 7): azure-mgmt-compute reads the catalog as `az vm image list|show` does
    and creates a gallery image version through its long-running PUT."""
    _catalog()
    _gallery()
    token = token_create(user=factories.user("sdk-operator", "operators"), name="sdk")[1]
    credential = ConsoleTokenCredential(token)
    client = azure_compute.ComputeManagementClient(
        credential,
        SUB,
        base_url=live_server.url,
        authentication_policy=LoopbackBearerPolicy(credential, "https://management.azure.com/.default"),
    )
    images = client.virtual_machine_images
    assert [p.name for p in images.list_publishers("eastus")] == ["Canonical", "MicrosoftWindowsServer"]
    assert "UbuntuServer" in [o.name for o in images.list_offers("eastus", "Canonical")]
    assert [s.name for s in images.list_skus("eastus", "Canonical", "UbuntuServer")] == ["18.04-LTS"]
    versions = images.list("eastus", "Canonical", "UbuntuServer", "18.04-LTS", top=1, orderby="name desc")
    assert [v.name for v in versions] == [LATE]
    image = images.get("eastus", "Canonical", "UbuntuServer", "18.04-LTS", LATE)
    assert image.properties.os_disk_image.operating_system == "Linux"

    poller = client.gallery_image_versions.begin_create_or_update(
        "rg-test",
        "gal",
        "ubuntu",
        "1.0.0",
        {
            "location": "eastus",
            "properties": {"publishingProfile": {"targetRegions": [{"name": "eastus"}, {"name": "westus"}]}},
        },
    )
    created = poller.result()
    assert created.properties.replication_status.aggregated_state == "Completed"
    read = client.gallery_image_versions.get("rg-test", "gal", "ubuntu", "1.0.0")
    assert [r.name for r in read.properties.publishing_profile.target_regions] == ["eastus", "westus"]
