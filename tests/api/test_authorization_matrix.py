"""SPEC 7 authorization, endpoint by endpoint: every route and method of the API (taken from the
OpenAPI description, which test_openapi keeps equal to the URLconf, so a new endpoint cannot be
left out) for five callers: anonymous, viewer, operator, staff and a revoked token."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from api import operations
from api.openapi import READ_ONLY, description
from api.tokens import token_create, token_revoke
from fleet import services as fleet_services
from fleet.models import FaultProfile, Gallery, GalleryImage
from tests import factories
from tests.api.conftest import API_VERSION
from upgrades import services

pytestmark = pytest.mark.django_db

METHODS = ("get", "put", "patch", "post", "delete")
# Writes after reads, deletes last: an operator's DELETE must not hide the set from what follows.
METHOD_ORDER = {"get": 0, "put": 1, "patch": 2, "post": 3, "delete": 4}


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str  # the OpenAPI path, with {parameters}
    body: Any  # the description's example body, if it has one
    read_only: bool = False  # a POST the description marks x-read-only (a plan preview)

    @property
    def is_read(self) -> bool:
        return self.method == "get" or self.read_only

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.template}"


def endpoints() -> list[Endpoint]:
    """Every described operation, reads first."""
    found = []
    for template, item in description()["paths"].items():  # type: ignore[attr-defined]
        for method in METHODS:
            if method in item:
                spec = item[method]
                body = spec.get("requestBody", {}).get("content", {}).get("application/json", {}).get("example")
                found.append(Endpoint(method, template, body, read_only=spec.get(READ_ONLY, False)))
    return sorted(found, key=lambda e: (0 if e.is_read else METHOD_ORDER[e.method], e.method, e.template))


@dataclass(frozen=True)
class SeededFleet:
    """A small fleet with one of everything the API reads, and the path values naming it."""

    path_values: dict[str, str]

    def path(self, template: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = match[1]
            assert name in self.path_values, f"no seeded value for path parameter {{{name}}} of {template}"
            return self.path_values[name]

        return re.sub(r"\{(\w+)\}", value, template)


def seed_fleet() -> SeededFleet:
    """Two scale sets ('web': outdated, with the Application Health extension and a rolling
    upgrade under way; 'api'), the published images, a gallery image with a version, a fault
    profile, and the operation that started the run."""
    operator = factories.user("seed-operator", "operators")
    web = factories.outdated_scale_set(4)
    factories.scale_set("api", 2, zones=[])
    gallery = Gallery.objects.create(
        subscription_id=factories.SUBSCRIPTION, resource_group="rg-test", name="gal", region=web.region
    )
    image = GalleryImage.objects.create(gallery=gallery, name="ubuntu", os_type="Linux")
    fleet_services.gallery_image_version_publish(image=image, name="1.0.0", target_regions=[web.region])
    FaultProfile.objects.create(target=factories.NEW_KEY, never_healthy_share=0.1)
    run = services.os_upgrade_now(scale_set=web, actor=operator)
    operation = operations.record(action="osRollingUpgrade", scale_set=web, user=operator, run=run)
    return SeededFleet(
        {
            "subscriptionId": factories.SUBSCRIPTION,
            "resourceGroupName": "rg-test",
            "vmScaleSetName": "web",
            "instanceId": "0",
            "vmssExtensionName": factories.APP_HEALTH_HTTP["name"],
            "location": web.region.name,
            "operationId": str(operation.id),
            "publisherName": factories.UBUNTU["image_publisher"],
            "offer": factories.UBUNTU["image_offer"],
            "skus": factories.UBUNTU["image_sku"],
            "version": factories.OLD_VERSION,
            "galleryName": "gal",
            "galleryImageName": "ubuntu",
            "galleryImageVersionName": "1.0.0",
            "target": factories.NEW_KEY,
            "runId": str(run.pk),
        }
    )


@pytest.fixture
def fleet() -> SeededFleet:
    return seed_fleet()


def _token(role: str, *, revoked: bool = False) -> str:
    user = factories.user(f"matrix-{role}{'-revoked' if revoked else ''}", role)
    token, plaintext = token_create(user=user, name="matrix")
    if revoked:
        token_revoke(token=token)
    return plaintext


CALLERS = ("anonymous", "viewer", "operator", "staff", "revoked")


def _headers(caller: str) -> dict[str, str]:
    token = {
        "anonymous": None,
        "viewer": lambda: _token("viewers"),
        "operator": lambda: _token("operators"),
        "staff": lambda: _token("staff"),
        "revoked": lambda: _token("operators", revoked=True),
    }[caller]
    return {"Authorization": f"Bearer {token()}"} if token else {}


def _expected(caller: str, endpoint: Endpoint, status: int) -> str | None:
    """What is wrong with `status`, or None. Never a 5xx; otherwise by caller and SPEC 7."""
    if status >= 500:
        return "a server error"
    if caller in ("anonymous", "revoked"):
        return None if status == 401 else "expected 401 AuthenticationFailed"
    if caller == "viewer":
        if endpoint.read_only and status == 409:
            return None  # the plan of an action the mid-upgrade 'web' refuses (R-ONE-1): past the role check
        if endpoint.is_read:
            return None if 200 <= status < 300 else "a viewer's read of a seeded resource must succeed"
        return None if status == 403 else "expected 403 AuthorizationFailed for a viewer's write"
    if status in (401, 403):
        return f"{caller}s may read and write"
    return None


def _call(client: Client, endpoint: Endpoint, path: str, headers: dict[str, str]) -> Any:
    url = f"{path}?api-version={API_VERSION}"
    if endpoint.method == "get":
        return client.get(url, headers=headers)
    body = json.dumps(endpoint.body if endpoint.body is not None else {})
    return client.generic(endpoint.method.upper(), url, body, content_type="application/json", headers=headers)


@pytest.fixture
def many_failed_attempts_allowed(settings: Any) -> None:
    """The revoked caller fails once per endpoint, more often than the per-minute limit on
    failed token attempts allows; that limit has its own tests (test_auth)."""
    settings.API_AUTH_FAILURES_PER_MINUTE = 10_000


@pytest.mark.usefixtures("many_failed_attempts_allowed")
@pytest.mark.parametrize("caller", CALLERS)
def test_every_endpoint_answers_each_caller_as_its_role_allows(caller: str, fleet: SeededFleet) -> None:
    headers = _headers(caller)
    client = Client()  # no session: only the bearer header (or nothing) authenticates
    mismatches = []
    for endpoint in endpoints():
        response = _call(client, endpoint, fleet.path(endpoint.template), headers)
        if (problem := _expected(caller, endpoint, response.status_code)) is not None:
            body = response.content.decode(errors="replace")[:200]
            mismatches.append(f"{endpoint}: {response.status_code} ({problem}) {body}")
    assert not mismatches, f"{len(mismatches)} endpoint(s) answered {caller} wrongly:\n" + "\n".join(mismatches)


def test_the_matrix_covers_reads_and_writes_of_every_part_of_the_api() -> None:
    """A guard on the matrix itself: it is not vacuous."""
    listed = endpoints()
    templates = {e.template for e in listed}
    assert len(listed) >= 40
    assert any(t.startswith("/console/api/") for t in templates)
    assert any("/galleries/" in t for t in templates)
    assert any("/publishers" in t for t in templates)
    assert {e.method for e in listed} == set(METHODS)
