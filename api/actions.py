"""Actions on a scale set (SPEC 7): rolling upgrades, their cancel, manual upgrade, reimage and
power actions. Each is a long-running operation: the service acts, an Operation records it in
the same transaction, and the answer is 202 with where to poll (api.operations)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse

from api import operations, selectors
from api.arm import ArmError, arm_view, json_body
from api.models import Operation
from fleet import services as fleet_services
from fleet.drivers import PowerAction
from fleet.models import Instance, ScaleSet
from upgrades import services
from upgrades.models import UpgradeRun


def _scale_set(subscription_id: str, resource_group: str, name: str) -> ScaleSet:
    return selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)


def instance_ids_of(request: HttpRequest, *, required: bool) -> list[str] | str:
    """`{"instanceIds": [...]}` (VirtualMachineScaleSetVMInstanceIDs); no body, or no
    instanceIds, means every instance unless the action needs them named. Ids are strings in
    ARM; numbers are taken too. "*" means all."""
    body = json_body(request)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request body must be a JSON object.", target="$")
    ids = body.get("instanceIds")
    if ids is None:
        if required:
            raise ArmError(
                400, "InvalidParameter", "Name the instances: instanceIds is required.", target="instanceIds"
            )
        return "*"
    if not isinstance(ids, list) or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
        raise ArmError(400, "InvalidParameter", "instanceIds must be a list of instance ids.", target="instanceIds")
    if not ids:
        raise ArmError(400, "InvalidParameter", "instanceIds names no instance.", target="instanceIds")
    return "*" if "*" in ids else [str(i) for i in ids]


def _run_operation(request: HttpRequest, action: str, scale_set: ScaleSet, start: Any) -> HttpResponse:
    with transaction.atomic():
        run: UpgradeRun = start()
        operation = operations.record(action=action, scale_set=scale_set, user=request.user, run=run)
    return operations.accepted(request, operation)


def _instances_operation(request: HttpRequest, action: str, scale_set: ScaleSet, act: Any) -> HttpResponse:
    with transaction.atomic():
        instances: list[Instance] = act()
        operation = operations.record(action=action, scale_set=scale_set, user=request.user, instances=instances)
    return operations.accepted(request, operation)


@arm_view(write=True, methods=("POST",))
def os_rolling_upgrade(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """Start an OS rolling upgrade to the latest image, now (manual trigger: no automatic
    rollback, R-ROLLBACK-1)."""
    scale_set = _scale_set(subscription_id, resource_group, name)
    return _run_operation(
        request,
        "osRollingUpgrade",
        scale_set,
        lambda: services.os_upgrade_now(scale_set=scale_set, actor=request.user),
    )


@arm_view(write=True, methods=("POST",))
def extension_rolling_upgrade(
    request: HttpRequest, subscription_id: str, resource_group: str, name: str
) -> HttpResponse:
    """Upgrade, now, every extension that opted in to automatic upgrades and has a newer
    release of its major version (R-EXT-1), under the rolling policy."""
    scale_set = _scale_set(subscription_id, resource_group, name)
    return _run_operation(
        request,
        "extensionRollingUpgrade",
        scale_set,
        lambda: services.extension_upgrade_now(scale_set=scale_set, actor=request.user),
    )


@arm_view(write=True, methods=("POST",))
def rolling_upgrade_cancel(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """R-CANCEL-1: no new batch starts; the one in flight finishes. 409 when none runs."""
    scale_set = _scale_set(subscription_id, resource_group, name)
    return _run_operation(
        request, operations.CANCEL, scale_set, lambda: services.run_cancel(scale_set=scale_set, actor=request.user)
    )


@arm_view(write=True, methods=("POST",))
def manual_upgrade(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """R-MAN-1: the named instances to the latest model, at once."""
    scale_set = _scale_set(subscription_id, resource_group, name)
    ids = instance_ids_of(request, required=True)
    return _run_operation(
        request,
        "manualupgrade",
        scale_set,
        lambda: services.manual_upgrade(scale_set=scale_set, actor=request.user, instance_ids=ids),
    )


@arm_view(write=True, methods=("POST",))
def reimage(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """R-MAN-2: a new OS disk from the model's image; data disks kept."""
    scale_set = _scale_set(subscription_id, resource_group, name)
    ids = instance_ids_of(request, required=False)
    return _instances_operation(
        request,
        "reimage",
        scale_set,
        lambda: services.reimage(scale_set=scale_set, instance_ids=ids, actor=request.user),
    )


def _power_view(action: PowerAction) -> Any:
    @arm_view(write=True, methods=("POST",))
    def view(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
        scale_set = _scale_set(subscription_id, resource_group, name)
        ids = instance_ids_of(request, required=False)
        return _instances_operation(
            request,
            action.value,
            scale_set,
            lambda: fleet_services.instances_power(scale_set=scale_set, instance_ids=ids, action=action),
        )

    view.__name__ = view.__qualname__ = f"power_{action.name.lower()}"
    view.__doc__ = f"{action.value} the named instances (all when none are named)."
    return view


start = _power_view(PowerAction.START)
restart = _power_view(PowerAction.RESTART)
power_off = _power_view(PowerAction.POWER_OFF)
deallocate = _power_view(PowerAction.DEALLOCATE)


# --- the operation-status resource ---------------------------------------------------------------


def _operation(subscription_id: str, location: str, operation_id: str) -> Operation:
    try:
        key = uuid.UUID(operation_id)
    except ValueError:
        key = None
    found = (
        Operation.objects.filter(pk=key, subscription_id=subscription_id, location__iexact=location).first()
        if key
        else None
    )
    if found is None:
        raise ArmError(404, "OperationNotFound", f"The operation '{operation_id}' was not found in {location}.")
    return operations.settle(found)


@arm_view(write=False)
def operation_status(request: HttpRequest, subscription_id: str, location: str, operation_id: str) -> HttpResponse:
    operation = _operation(subscription_id, location, operation_id)
    if request.GET.get("monitor") == "true":
        return operations.monitor_response(request, operation)
    return operations.status_response(request, operation)
