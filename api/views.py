"""Read endpoints of the ARM-compatible API (SPEC 7): thin, one selector and one shape each."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse

from api import bodies, selectors, shapes
from api.arm import ArmError, arm_json, arm_view, json_body
from fleet import services as fleet_services
from upgrades import services

# ARM's rule for scale set names, near enough: letters, digits, '-', '_', '.'.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _list(request: HttpRequest, value: list[Any], next_after: int | None) -> HttpResponse:
    """ARM's list envelope; nextLink is absolute and keeps the caller's query (api-version,
    $expand)."""
    body: dict[str, Any] = {"value": value}
    if next_after is not None:
        kept = {name: value for name, value in request.GET.items() if name != "$skiptoken"}  # api-version, $expand
        query = urlencode({**kept, "$skiptoken": str(next_after)}, safe="$")
        body["nextLink"] = request.build_absolute_uri(f"{request.path}?{query}")
    return arm_json(body)


def _after(request: HttpRequest) -> int | None:
    return selectors.parse_skiptoken(request.GET.get("$skiptoken"))


@arm_view(write=False)
def subscription_list(request: HttpRequest) -> HttpResponse:
    return arm_json({"value": [shapes.subscription(sub) for sub in selectors.subscription_ids()]})


@arm_view(write=False)
def scale_set_list(request: HttpRequest, subscription_id: str, resource_group: str | None = None) -> HttpResponse:
    page = selectors.scale_set_page(
        subscription_id=subscription_id,
        resource_group=resource_group,
        after=_after(request),
        size=settings.API_PAGE_SIZE,
    )
    return _list(request, [shapes.scale_set(s, extensions) for s, extensions in page.rows], page.next_after)


@arm_view(methods=("GET", "PUT", "PATCH", "DELETE"))
def scale_set(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """The set: GET reads it; PUT creates (201) or updates it (200); PATCH updates what its body
    names; DELETE removes it (200; 204 when there was none)."""
    found = selectors.scale_set_find(subscription_id=subscription_id, resource_group=resource_group, name=name)
    if request.method == "GET" or (found is None and request.method != "PUT"):
        if found is None and request.method == "DELETE":
            return HttpResponse(status=204)
        found = found or selectors.scale_set_get(
            subscription_id=subscription_id, resource_group=resource_group, name=name
        )
        return arm_json(shapes.scale_set(found, selectors.extensions_of(found)))
    if request.method == "DELETE":
        assert found is not None
        services.scale_set_delete(scale_set=found)
        return HttpResponse(status=200)
    body = bodies.scale_set_body(json_body(request), existing=found)
    if found is None:
        created = _create(subscription_id, resource_group, name, body)
        return arm_json(shapes.scale_set(created, selectors.extensions_of(created)), status=201)
    services.scale_set_update(
        scale_set=found,
        settings=body.settings(),
        model=body.model(),
        extensions=body.extensions,
        capacity=body.capacity,
        actor=request.user,
    )
    updated = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    return arm_json(shapes.scale_set(updated, selectors.extensions_of(updated)))


def _create(subscription_id: str, resource_group: str, name: str, body: bodies.ScaleSetBody) -> Any:
    if not _NAME.match(name):
        raise ArmError(
            400,
            "InvalidParameter",
            f"The scale set name '{name}' is invalid: 1 to 64 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit.",
            target="name",
        )
    assert body.region is not None  # bodies.scale_set_body requires a location for a new set
    try:
        return fleet_services.scale_set_create(
            subscription_id=subscription_id,
            resource_group=resource_group,
            name=name,
            region=body.region,
            capacity=body.capacity or 0,
            extensions=body.extensions or (),
            **body.fields,
        )
    except IntegrityError:
        raise ArmError(409, "Conflict", f"The scale set {name} was created meanwhile; read it and try again.") from None


@arm_view(write=False)
def scale_set_instance_view(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    return arm_json(
        shapes.scale_set_instance_view(selectors.instance_states(scale_set), selectors.extensions_of(scale_set))
    )


def _expand_instance_view(request: HttpRequest) -> bool:
    return request.GET.get("$expand", "").lower() == "instanceview"


@arm_view(write=False)
def vm_list(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    page = selectors.instance_page(scale_set=scale_set, after=_after(request), size=settings.API_PAGE_SIZE)
    extensions = selectors.extensions_of(scale_set) if _expand_instance_view(request) else None
    value = [
        shapes.virtual_machine(
            vm,
            scale_set,
            vm.data_disks.all(),
            instance_view=shapes.vm_instance_view(vm, scale_set, extensions) if extensions is not None else None,
        )
        for vm in page.rows
    ]
    return _list(request, value, page.next_after)


@arm_view(write=False)
def vm_get(
    request: HttpRequest, subscription_id: str, resource_group: str, name: str, instance_id: str
) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    vm = selectors.instance_get(scale_set=scale_set, instance_id=instance_id)
    instance_view = None
    if _expand_instance_view(request):
        instance_view = shapes.vm_instance_view(vm, scale_set, selectors.extensions_of(scale_set))
    return arm_json(shapes.virtual_machine(vm, scale_set, vm.data_disks.all(), instance_view=instance_view))


@arm_view(write=False)
def vm_instance_view(
    request: HttpRequest, subscription_id: str, resource_group: str, name: str, instance_id: str
) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    vm = selectors.instance_get(scale_set=scale_set, instance_id=instance_id)
    return arm_json(shapes.vm_instance_view(vm, scale_set, selectors.extensions_of(scale_set)))


@arm_view(write=False)
def rolling_upgrade_latest(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    run = selectors.latest_rolling_upgrade(scale_set)
    if run is None:
        raise ArmError(404, "NotFound", f"No rolling upgrade has run on {scale_set.name} yet.")
    return arm_json(shapes.rolling_upgrade_status(run, scale_set))


@arm_view(write=False)
def os_upgrade_history(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """R-HIST-1: the last five OS upgrade attempts of the past two months, newest first."""
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    runs = selectors.os_upgrade_history(scale_set)
    return arm_json({"value": [shapes.os_upgrade_history_entry(run, scale_set) for run in runs]})


# --- extensions -----------------------------------------------------------------------------------


def _extension_specs(scale_set: Any) -> list[dict[str, Any]]:
    """The set's extensions as specs for services.scale_set_update (protected settings left
    out: they are kept as they are)."""
    return [
        {
            "name": ext.name,
            "publisher": ext.publisher,
            "type": ext.type,
            "type_handler_version": ext.type_handler_version,
            "auto_upgrade_minor_version": ext.auto_upgrade_minor_version,
            "enable_automatic_upgrade": ext.enable_automatic_upgrade,
            "provision_after_extensions": list(ext.provision_after_extensions),
            "settings": ext.settings,
        }
        for ext in selectors.extensions_of(scale_set)
    ]


@arm_view(write=False)
def extension_list(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    return arm_json({"value": [shapes.extension_resource(e, scale_set) for e in selectors.extensions_of(scale_set)]})


@arm_view(methods=("GET", "PUT", "DELETE"))
def extension(
    request: HttpRequest, subscription_id: str, resource_group: str, name: str, extension_name: str
) -> HttpResponse:
    """One extension of the set's model. PUT creates (201) or updates (200) it; DELETE removes
    it (200; 204 when there was none). enableAutomaticUpgrade and autoUpgradeMinorVersion are
    upgrade settings; any other change is a model change (R-MODE-1)."""
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    specs = _extension_specs(scale_set)
    existing = next((spec for spec in specs if spec["name"].lower() == extension_name.lower()), None)
    if request.method == "GET":
        if existing is None:
            raise _extension_not_found(scale_set, extension_name)
        return arm_json(shapes.extension_resource(_extension_row(scale_set, existing["name"]), scale_set))
    if request.method == "DELETE":
        if existing is None:
            return HttpResponse(status=204)
        services.scale_set_update(
            scale_set=scale_set, extensions=[s for s in specs if s is not existing], actor=request.user
        )
        return HttpResponse(status=200)
    spec = bodies.extension_body(json_body(request), name=existing["name"] if existing else extension_name)
    wanted = [spec if s is existing else s for s in specs] + ([] if existing else [spec])
    services.scale_set_update(scale_set=scale_set, extensions=wanted, actor=request.user)
    row = _extension_row(scale_set, spec["name"])
    return arm_json(shapes.extension_resource(row, scale_set), status=200 if existing else 201)


def _extension_row(scale_set: Any, name: str) -> Any:
    return next(e for e in selectors.extensions_of(scale_set) if e.name == name)


def _extension_not_found(scale_set: Any, name: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{scale_set.name}/extensions/{name}' "
        f"under resource group '{scale_set.resource_group}' was not found.",
    )
