"""The OpenAPI description (SPEC 7): valid, complete (every route of the URLconf under
/subscriptions and /console/api, every method, nothing more), and true: a schemathesis fuzz run
against the app, in-process, finds no server error and no answer the description does not allow."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import arm
from api.openapi import description
from api.tokens import token_create
from tests import factories
from tests.api.conftest import API_VERSION
from tests.api.test_authorization_matrix import endpoints, seed_fleet

pytestmark = pytest.mark.django_db

OPENAPI_URL = "/console/api/openapi.json"
API_PREFIXES = ("subscriptions", "console/api")
DESCRIBED_METHODS = ("get", "put", "patch", "post", "delete")

# The fuzz run's bounds: docs/RELIABILITY.md records them with the case count they give. Per
# operation, at most 25 cases in three passes: valid input on the seeded resources (so bodies and
# queries reach the views' logic), valid input on generated paths, invalid input on the seeded ones.
PASSES: list[tuple[str, int, GenerationMode, bool]] = [
    # (name, max examples, generation mode, on the seeded resources)
    ("seeded", 12, GenerationMode.POSITIVE, True),
    ("generated paths", 8, GenerationMode.POSITIVE, False),
    ("invalid input", 5, GenerationMode.NEGATIVE, True),
]
FUZZ_SETTINGS = hypothesis_settings(
    deadline=None,
    derandomize=True,  # the same cases on every run: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


# --- valid ---------------------------------------------------------------------------------------


def test_the_description_needs_a_login_like_every_page(client: Client) -> None:
    response = client.get(OPENAPI_URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "AuthenticationFailed"


def test_the_served_description_is_valid_openapi_3(client: Client) -> None:
    token = token_create(user=factories.user("reader", "viewers"), name="docs")[1]
    response = client.get(OPENAPI_URL, headers={"Authorization": f"Bearer {token}"})  # no api-version needed

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    served = response.json()
    assert served["openapi"].startswith("3.0.")
    assert served["servers"] == [{"url": "/", "description": "The host this description was fetched from"}]
    schema = schemathesis.openapi.from_dict(served)
    schema.validate()  # against the OpenAPI 3.0 meta-schema; raises with the offending location
    operations = [result.ok() for result in schema.get_all_operations()]  # every $ref resolves
    assert len(operations) == sum(
        1 for item in served["paths"].values() for method in item if method in DESCRIBED_METHODS
    )


def test_an_invalid_description_would_be_caught() -> None:
    """The validity test can fail: a response without its description is refused."""
    broken = description()
    broken["paths"]["/subscriptions"]["get"]["responses"]["200"].pop("description")  # type: ignore[index]
    with pytest.raises(Exception, match="responses"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_endpoint_documents_the_api_version_the_token_and_their_errors() -> None:
    served = description()
    for path, item in served["paths"].items():  # type: ignore[attr-defined]
        for method in DESCRIBED_METHODS:
            if method not in item or path == OPENAPI_URL:
                continue
            spec = item[method]
            assert {"$ref": "#/components/parameters/ApiVersion"} in spec["parameters"], (method, path)
            assert "security" not in spec, (method, path)  # the document's: bearer
            assert {"400", "401", "403", "429"} <= set(spec["responses"]), (method, path)
            if "requestBody" in spec:  # arm.json_body: a body over DATA_UPLOAD_MAX_MEMORY_SIZE is 413
                assert "413" in spec["responses"], (method, path)
    assert served["security"] == [{"bearerAuth": []}]


# --- complete --------------------------------------------------------------------------------------


def _routes(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern


def _api_routes() -> list[str]:
    """The URLconf's API routes (Django route syntax), without the catch-alls that answer 404."""
    routes = []
    for route, pattern in _routes(get_resolver().url_patterns):
        if pattern.callback is arm.unknown_path:
            continue
        if not isinstance(pattern.pattern, RoutePattern):
            if route.lstrip("^").startswith(API_PREFIXES):
                raise AssertionError(f"{route}: a regex route under the API; use path() so this test can read it")
            continue
        if route.startswith(API_PREFIXES):
            routes.append(route)
    return routes


_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")
_PARAMETER = re.compile(r"\{\w+\}")


def _allowed_methods(client: Client, route: str) -> set[str]:
    """The methods a route answers, as its own 405 says (Allow) to a method no route takes."""
    url = "/" + _CONVERTER.sub("x", route)
    assert resolve(url).route == route, f"probing {route} reached another route"
    response = client.generic("TRACE", url)
    assert response.status_code == 405, f"{route} answered TRACE with {response.status_code}"
    return {method.strip().lower() for method in response["Allow"].split(",")}


def test_every_route_and_method_is_described_and_nothing_else(client: Client) -> None:
    in_urlconf = {
        ("/" + _CONVERTER.sub("{}", route), method)
        for route in _api_routes()
        for method in _allowed_methods(client, route)
    }
    described = {
        (_PARAMETER.sub("{}", path), method)
        for path, item in description()["paths"].items()  # type: ignore[attr-defined]
        for method in item
        if method in DESCRIBED_METHODS
    }

    assert len(in_urlconf) >= 40  # the whole API, not a stray prefix
    undescribed = sorted(f"{m.upper()} {p}" for p, m in in_urlconf - described)
    unrouted = sorted(f"{m.upper()} {p}" for p, m in described - in_urlconf)
    assert not undescribed, "Routes the OpenAPI description leaves out:\n" + "\n".join(undescribed)
    assert not unrouted, "Described but not in the URLconf:\n" + "\n".join(unrouted)


# --- true: every property sent is described ---------------------------------------------------------


def _closed(schema: Any) -> Any:
    """The description with every object that lists its properties closed to others."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed(value) for key, value in schema.items()}
    if schema.get("type") == "object" and schema.get("properties") and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


def test_every_property_the_api_sends_is_described(wsgi_app: WSGIHandler) -> None:
    """Every endpoint over the seeded fleet (reads first, writes with the description's example
    bodies), validated against the description with its objects closed: a property the views
    send but the description leaves out fails here, though the served description stays open."""
    fleet = seed_fleet()
    token = token_create(user=factories.user("closer", "operators"), name="closed")[1]
    schema = schemathesis.openapi.from_dict(_closed(description()))
    schema.app = wsgi_app
    operations = {result.ok().label: result.ok() for result in schema.get_all_operations()}
    answered: Counter[int] = Counter()
    failures = []
    for endpoint in endpoints():
        operation = operations[f"{endpoint.method.upper()} {endpoint.template}"]
        seeded = {name: fleet.path_values[name] for name in re.findall(r"\{(\w+)\}", endpoint.template)}
        body = {"body": endpoint.body, "media_type": "application/json"} if endpoint.body is not None else {}
        case = operation.Case(
            path_parameters=seeded,
            query={"api-version": API_VERSION},
            headers={"Authorization": f"Bearer {token}"},
            **body,
        )
        response = case.call()
        answered[response.status_code // 100] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as error:
            failures.append(f"{endpoint}:\n{error}")

    assert answered[2] >= 35  # mostly real answers with bodies, not errors
    assert not failures, "\n\n".join(failures)


PLAN = (
    "POST /console/api/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/"
    "virtualMachineScaleSets/{vmScaleSetName}/plan"
)
PLAN_BODIES: list[dict[str, Any]] = [
    {"action": "osRollingUpgrade"},  # completes: stopCode and stopBatch null
    {"action": "osRollingUpgrade", "failureShare": 0.5, "bootSeconds": 90},  # a gate stops it
    {"action": "rolling", "batchSize": 3, "pauseSeconds": 30},
    {"action": "manualupgrade", "updateDomain": 1},
    {"action": "manualupgrade", "instanceIds": ["*"]},
    {"action": "manualupgrade", "zone": "2"},
]


def test_every_property_of_a_plan_is_described(wsgi_app: WSGIHandler) -> None:
    """The seeded 'web' is mid-upgrade, so the test above only meets the plan's 409 (R-ONE-1):
    its 200, for each action and the description's own example, on a zonal set at rest with a
    protected (skipped) instance, against the closed description, read by a viewer."""
    scale_set = factories.outdated_scale_set(12, zones=["1", "2", "3"])
    scale_set.instances.filter(instance_id=0).update(protected_from_scale_set_actions=True)
    token = token_create(user=factories.user("planner", "viewers"), name="plan")[1]
    schema = schemathesis.openapi.from_dict(_closed(description()))
    schema.app = wsgi_app
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == PLAN)
    example = next(e.body for e in endpoints() if str(e) == PLAN)
    answers = []
    for body in [example, *PLAN_BODIES]:
        case = operation.Case(
            path_parameters={
                "subscriptionId": scale_set.subscription_id,
                "resourceGroupName": scale_set.resource_group,
                "vmScaleSetName": scale_set.name,
            },
            query={"api-version": API_VERSION},
            headers={"Authorization": f"Bearer {token}"},
            body=body,
            media_type="application/json",
        )
        response = case.call()
        assert response.status_code == 200, (body, response.text)
        case.validate_response(response, checks=CHECKS)
        answers.append(response.json())

    # Every shape was met: null and non-null stops, skipped instances, zones.
    assert {a["whatIf"]["stopCode"] is None for a in answers} == {True, False}
    assert any(a["skipped"] for a in answers)
    assert any(b["zone"] for a in answers for b in a["batches"])


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_a_fault_profile_target_with_a_line_break_is_a_described_404(wsgi_app: WSGIHandler, method: str) -> None:
    """<path:target> takes no line break, so the catch-all answers ARM's 404 (the fuzz once met
    this on PUT): the description allows it."""
    token = token_create(user=factories.user("breaker", "operators"), name="break")[1]
    schema = schemathesis.openapi.from_dict(description())
    schema.app = wsgi_app
    label = f"{method} /console/api/faultProfiles/{{target}}"
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == label)
    body: dict[str, Any] = (
        {"body": {"neverHealthyShare": 0.1}, "media_type": "application/json"} if method == "PUT" else {}
    )
    case = operation.Case(
        path_parameters={"target": f"{factories.NEW_KEY}%0A"},  # quoted, as the fuzz's generated paths are
        query={"api-version": API_VERSION},
        headers={"Authorization": f"Bearer {token}"},
        **body,
    )
    response = case.call()

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "InvalidResourceType"
    case.validate_response(response, checks=CHECKS)


# --- true: the fuzz run ------------------------------------------------------------------------------


@pytest.fixture
def wsgi_app() -> Iterator[WSGIHandler]:
    """Django's WSGI handler, called in this thread and inside the test's transaction. As
    Django's test client does, keep close_old_connections off the request signals: it would
    close the connection the test's transaction lives on."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_the_checks_catch_an_answer_off_the_description(wsgi_app: WSGIHandler) -> None:
    """A guard on the fuzz run: with a description that is wrong about an answer, the same
    checks fail (they are not silently skipped)."""
    factories.scale_set("web", 1)
    token = token_create(user=factories.user("checker", "viewers"), name="check")[1]
    wrong = description()
    wrong["components"]["schemas"]["Subscription"]["properties"]["state"]["enum"] = ["Disabled"]  # type: ignore[index]
    schema = schemathesis.openapi.from_dict(wrong)
    schema.app = wsgi_app
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().label == "GET /subscriptions")
    case = operation.Case(query={"api-version": API_VERSION}, headers={"Authorization": f"Bearer {token}"})

    with pytest.raises(FailureGroup, match="Response violates schema"):
        case.call_and_validate(checks=CHECKS)


def test_fuzzing_the_api_finds_no_server_error_and_no_answer_off_the_description(
    wsgi_app: WSGIHandler, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every operation, authenticated as an operator over a seeded fleet, in the PASSES above."""
    fleet = seed_fleet()
    token = token_create(user=factories.user("fuzzer", "operators"), name="fuzz")[1]
    fixed: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}, "query": {"api-version": API_VERSION}}
    schema = schemathesis.openapi.from_wsgi(OPENAPI_URL, wsgi_app, headers=fixed["headers"])
    statuses: Counter[int] = Counter()
    failures: list[str] = []

    def exercise(case: Any) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        seeded = {name: fleet.path_values[name] for name in re.findall(r"\{(\w+)\}", operation.path)}
        free_input = len(operation.body) > 0 or any(p.name not in fixed["query"] for p in operation.query)
        for name, max_examples, mode, on_seeded in PASSES:
            if mode == GenerationMode.NEGATIVE and not free_input:
                continue  # nothing left to make invalid: the path is seeded, api-version and token fixed
            strategy = operation.as_strategy(mode, path_parameters=seeded if on_seeded else None, **fixed)
            run = hypothesis_settings(FUZZ_SETTINGS, max_examples=max_examples)(given(case=strategy)(exercise))
            try:
                run()
            except (FailureGroup, Exception) as error:  # every failing operation reported, not only the first
                failures.append(f"{operation.label} ({name}):\n{error}")
    elapsed = time.monotonic() - started
    with capsys.disabled():
        answers = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
        print(f"\nAPI fuzz: {statuses.total()} cases over {len(operations)} operations in {elapsed:.1f}s ({answers})")

    assert len(operations) >= 40
    assert not failures, f"{len(failures)} fuzz run(s) failed:\n\n" + "\n\n".join(failures)
