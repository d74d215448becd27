"""Odd characters in paths, queries and bodies get ARM's JSON errors, never a 500 or an HTML
page: digits outside ASCII ('²' passes str.isdigit() but not int()), and newlines in paths."""

from __future__ import annotations

import pytest

from fleet.versions import parse_version
from tests import factories
from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

GROUP = f"/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test"
SETS = f"{GROUP}/providers/Microsoft.Compute/virtualMachineScaleSets"
CATALOG = f"/subscriptions/{factories.SUBSCRIPTION}/providers/Microsoft.Compute/locations/eastus/publishers"
CONSOLE_SET = f"/console/api/subscriptions/{factories.SUBSCRIPTION}/resourceGroups/rg-test/virtualMachineScaleSets/web"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (f"{SETS}/web/virtualMachines/²", {}),
        (SETS, {"$skiptoken": "²"}),
        (f"{CATALOG}/Canonical/artifacttypes/vmimage/offers/UbuntuServer/skus/18.04-LTS/versions", {"$top": "²"}),
        ("/console/api/runs/²", {}),
        ("/console/api/faultProfiles/a\nb", {}),
        ("/console/api/nothing\nhere", {}),
        (f"/subscriptions/{factories.SUBSCRIPTION}\n/nothing/here", {}),
    ],
)
def test_odd_reads_are_arm_errors(operator_api: ApiClient, path: str, params: dict[str, str]) -> None:
    factories.scale_set("web", 2)
    response = operator_api.get(path, **params)
    assert 400 <= response.status_code < 500
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", f"{CONSOLE_SET}/maintenance", {"instanceIds": ["²"], "on": True}),
        ("post", f"{SETS}/web/reimage", {"instanceIds": ["²"]}),
        ("post", f"{SETS}/web/manualupgrade", {"instanceIds": ["²"]}),
        ("post", "/console/api/extensionVersions", {"publisher": "P", "type": "T", "version": "1.²"}),
        (
            "post",
            "/console/api/platformImageVersions",
            {"publisher": "P", "offer": "O", "sku": "S", "version": "1.²", "locations": ["eastus"]},
        ),
        ("put", "/console/api/faultProfiles/a.b@1.²", {"neverHealthyShare": 0.5}),
    ],
)
def test_odd_writes_are_400(operator_api: ApiClient, method: str, path: str, body: dict) -> None:
    factories.scale_set("web", 2)
    response = operator_api.send(method, path, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"]


def test_versions_are_ascii_digits() -> None:
    with pytest.raises(Exception, match="version"):
        parse_version("1.²")
