"""Read endpoints of the ARM-compatible API (SPEC 7): thin, one selector and one shape each."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from api import selectors, shapes
from api.arm import ArmError, arm_json, arm_view


def _list(request: HttpRequest, value: list[Any], next_after: int | None) -> HttpResponse:
    """ARM's list envelope; nextLink is absolute and keeps the caller's api-version."""
    body: dict[str, Any] = {"value": value}
    if next_after is not None:
        query = urlencode({"api-version": request.GET["api-version"], "$skiptoken": str(next_after)}, safe="$")
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


@arm_view(write=False)
def scale_set_get(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    return arm_json(shapes.scale_set(scale_set, selectors.extensions_of(scale_set)))


@arm_view(write=False)
def scale_set_instance_view(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    return arm_json(
        shapes.scale_set_instance_view(selectors.instance_states(scale_set), selectors.extensions_of(scale_set))
    )


@arm_view(write=False)
def vm_list(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    page = selectors.instance_page(scale_set=scale_set, after=_after(request), size=settings.API_PAGE_SIZE)
    value = [shapes.virtual_machine(vm, scale_set, vm.data_disks.all()) for vm in page.rows]
    return _list(request, value, page.next_after)


@arm_view(write=False)
def vm_get(
    request: HttpRequest, subscription_id: str, resource_group: str, name: str, instance_id: str
) -> HttpResponse:
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    vm = selectors.instance_get(scale_set=scale_set, instance_id=instance_id)
    instance_view = None
    if request.GET.get("$expand") == "instanceView":
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
