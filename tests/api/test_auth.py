"""api-version, authentication, the failed-attempt limit, roles and the error envelope (SPEC 7)."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from api.arm import arm_json, arm_view, json_body
from api.tokens import token_create, token_revoke
from fleet.models import ScaleSet
from tests import factories
from tests.api.conftest import ApiClient, api_client_for
from upgrades.errors import OperationNotAllowed

pytestmark = pytest.mark.django_db

SUBSCRIPTIONS = "/subscriptions"


# --- a test-only write view, mounted by the urls override below -----------------------------------


@arm_view(write=True, methods=["POST"])
def _write_probe(request: HttpRequest) -> HttpResponse:
    body: Any = json_body(request)
    action = body.get("do") if isinstance(body, dict) else None
    if action == "invalid-one":
        raise ValidationError({"max_batch_instance_percent": "Must be from 5 to 100."})
    if action == "invalid-many":
        raise ValidationError({"capacity": "Too big.", "zones": ["Unknown zone 9."]})
    if action == "busy":
        raise OperationNotAllowed("A rolling upgrade is already running on web.")
    if action == "missing":
        ScaleSet.objects.get(name="nowhere")
    return arm_json({"ok": True, "user": request.user.get_username()})


urlpatterns = [path("test-write", _write_probe), path("", include("config.urls"))]
with_probe = pytest.mark.urls("tests.api.test_auth")


def _error(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json; charset=utf-8"
    return response.json()["error"]


# --- api-version -----------------------------------------------------------------------------------


def test_missing_api_version_is_400_missing_api_version_parameter(viewer_api: ApiClient) -> None:
    response = viewer_api.get(SUBSCRIPTIONS, api_version=None)
    assert response.status_code == 400
    assert _error(response) == {
        "code": "MissingApiVersionParameter",
        "message": "The api-version query parameter (?api-version=) is required for all requests.",
    }


@pytest.mark.parametrize("version", ["2018-09-30", "2017-12-01", "latest", "2024-13-01", "2024-02-30", "2024-7-1"])
def test_old_or_malformed_api_version_is_400_invalid(viewer_api: ApiClient, version: str) -> None:
    response = viewer_api.get(SUBSCRIPTIONS, api_version=version)
    assert response.status_code == 400
    assert _error(response)["code"] == "InvalidApiVersionParameter"


@pytest.mark.parametrize("version", ["2018-10-01", "2024-07-01", "2025-03-01-preview"])
def test_api_versions_from_2018_10_01_are_accepted(viewer_api: ApiClient, version: str) -> None:
    assert viewer_api.get(SUBSCRIPTIONS, api_version=version).status_code == 200


def test_api_version_is_checked_before_authentication() -> None:
    response = ApiClient(None).get(SUBSCRIPTIONS, api_version=None)
    assert response.status_code == 400


# --- authentication -------------------------------------------------------------------------------


def test_no_credentials_is_401_with_a_bearer_challenge() -> None:
    response = ApiClient(None).get(SUBSCRIPTIONS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert _error(response)["code"] == "AuthenticationFailed"


@pytest.mark.parametrize(
    "token", ["nonsense", "vmss_aaaaaaaaaaaa_wrong", "vmss_short_x", "Basic dXNlcjpwYXNz", "vmss__", ""]
)
def test_bad_token_is_401(token: str) -> None:
    response = ApiClient(token or "x y z").get(SUBSCRIPTIONS)
    assert response.status_code == 401
    assert _error(response)["code"] == "AuthenticationFailed"


def test_right_prefix_with_a_wrong_secret_is_401() -> None:
    good = api_client_for("viewers").token
    assert good is not None
    response = ApiClient(good[:-2] + ("AA" if not good.endswith("AA") else "BB")).get(SUBSCRIPTIONS)
    assert response.status_code == 401


def test_revoked_token_is_401() -> None:
    user = factories.user("ada", "viewers")
    token, plaintext = token_create(user=user, name="ci")
    assert ApiClient(plaintext).get(SUBSCRIPTIONS).status_code == 200
    token_revoke(token=token)
    assert ApiClient(plaintext).get(SUBSCRIPTIONS).status_code == 401


def test_token_of_an_inactive_user_is_401() -> None:
    user = factories.user("gone", "operators")
    plaintext = token_create(user=user, name="ci")[1]
    user.is_active = False
    user.save()
    assert ApiClient(plaintext).get(SUBSCRIPTIONS).status_code == 401


def test_logged_in_page_session_can_read_without_a_token() -> None:
    factories.user("pat", "viewers")
    client = Client()
    client.login(username="pat", password="patpat")
    assert client.get(SUBSCRIPTIONS, {"api-version": "2024-07-01"}).status_code == 200


def test_after_20_failures_a_minute_the_address_gets_429_even_with_a_good_token(settings: Any) -> None:
    settings.API_AUTH_FAILURES_PER_MINUTE = 20
    good = api_client_for("viewers")
    bad = ApiClient("vmss_aaaaaaaaaaaa_guess")
    for _ in range(20):
        assert bad.get(SUBSCRIPTIONS).status_code == 401
    refused = bad.get(SUBSCRIPTIONS)
    assert refused.status_code == 429
    assert _error(refused)["code"] == "TooManyRequests"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert good.get(SUBSCRIPTIONS).status_code == 429


def test_failures_are_counted_per_client_address(settings: Any) -> None:
    settings.API_AUTH_FAILURES_PER_MINUTE = 2
    good = api_client_for("viewers")
    bad = ApiClient("nope")
    for _ in range(3):
        bad.get(SUBSCRIPTIONS)
    assert bad.get(SUBSCRIPTIONS).status_code == 429
    other = good.client.get(
        SUBSCRIPTIONS,
        {"api-version": "2024-07-01"},
        headers={"Authorization": f"Bearer {good.token}"},
        REMOTE_ADDR="10.0.0.9",
    )
    assert other.status_code == 200


# --- roles ------------------------------------------------------------------------------------------


def test_user_without_a_role_is_403_on_reads() -> None:
    user = factories.user("nobody", "none")
    response = ApiClient(token_create(user=user, name="ci")[1]).get(SUBSCRIPTIONS)
    assert response.status_code == 403
    assert _error(response)["code"] == "AuthorizationFailed"


@with_probe
def test_viewer_is_403_on_a_write_view(viewer_api: ApiClient) -> None:
    response = viewer_api.post("/test-write")
    assert response.status_code == 403
    assert _error(response)["code"] == "AuthorizationFailed"


@with_probe
@pytest.mark.parametrize("role", ["operators", "staff"])
def test_operators_and_staff_may_write(role: str) -> None:
    response = api_client_for(role).post("/test-write")
    assert response.status_code == 200
    assert response.json()["ok"] is True


@with_probe
def test_session_write_without_csrf_token_is_refused() -> None:
    factories.user("olga", "operators")
    client = Client(enforce_csrf_checks=True)
    client.login(username="olga", password="olgaolga")
    response = client.post("/test-write?api-version=2024-07-01", b"{}", content_type="application/json")
    assert response.status_code == 403
    assert _error(response)["code"] == "InvalidCsrfToken"


@with_probe
def test_bearer_write_needs_no_csrf_token() -> None:
    api = api_client_for("operators")
    api.client = Client(enforce_csrf_checks=True)
    assert api.post("/test-write").status_code == 200


# --- the error envelope ------------------------------------------------------------------------------


@with_probe
def test_validation_error_on_one_field_is_400_with_target(operator_api: ApiClient) -> None:
    response = operator_api.post("/test-write", b'{"do": "invalid-one"}')
    assert response.status_code == 400
    assert _error(response) == {
        "code": "InvalidParameter",
        "message": "Must be from 5 to 100.",
        "target": "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent",  # where the body holds it
    }


@with_probe
def test_validation_errors_on_several_fields_are_details(operator_api: ApiClient) -> None:
    error = _error(operator_api.post("/test-write", b'{"do": "invalid-many"}'))
    assert error["code"] == "InvalidParameter"
    assert {(d["target"], d["message"]) for d in error["details"]} == {
        ("sku.capacity", "Too big."),
        ("zones", "Unknown zone 9."),
    }


@with_probe
def test_operation_not_allowed_is_409(operator_api: ApiClient) -> None:
    response = operator_api.post("/test-write", b'{"do": "busy"}')
    assert response.status_code == 409
    assert _error(response) == {
        "code": "OperationNotAllowed",
        "message": "A rolling upgrade is already running on web.",
    }


@with_probe
def test_does_not_exist_is_404_resource_not_found(operator_api: ApiClient) -> None:
    response = operator_api.post("/test-write", b'{"do": "missing"}')
    assert response.status_code == 404
    assert _error(response)["code"] == "ResourceNotFound"


@with_probe
@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b'{"a": '])
def test_malformed_json_is_400_invalid_request_content(operator_api: ApiClient, body: bytes) -> None:
    response = operator_api.post("/test-write", body)
    assert response.status_code == 400
    assert _error(response)["code"] == "InvalidRequestContent"


@with_probe
def test_wrong_method_is_405_method_not_allowed(operator_api: ApiClient) -> None:
    response = operator_api.get("/test-write")
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert _error(response)["code"] == "MethodNotAllowed"


def test_post_on_a_read_endpoint_is_405(operator_api: ApiClient) -> None:
    response = operator_api.post(SUBSCRIPTIONS)
    assert response.status_code == 405
    assert _error(response)["code"] == "MethodNotAllowed"


@pytest.mark.parametrize(
    "path",
    [
        "/subscriptions/x/providers/Microsoft.Compute/disks",
        "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/nope",
        "/subscriptions/",
    ],
)
def test_unknown_path_under_subscriptions_is_an_arm_404(viewer_api: ApiClient, path: str) -> None:
    response = viewer_api.get(path)
    assert response.status_code == 404
    assert _error(response)["code"] == "InvalidResourceType"
