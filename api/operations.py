"""Long-running operations as ARM does them (SPEC 7).

An action that takes time answers 202 Accepted with two URLs: `Azure-AsyncOperation`, the
operation-status resource ({"status": "InProgress"|"Succeeded"|"Failed"|"Canceled",
"error"?}), and `Location`, the same operation's monitor, which answers 202 until it is done.
`Retry-After` says how long to wait between polls. The Azure SDKs' `begin_*` pollers follow
exactly these.

Nothing drives an operation. Its status is read from what it started: the run (an upgrade
finishes as its run does; a cancel is done once the run stops rolling forward), or, for
reimage and power actions, the driver's work still due on the instances it acted on. The
first terminal status seen is stored, so an answer never changes afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from api.arm import ArmError, arm_json
from api.models import Operation, OperationStatus
from api.shapes import run_error
from fleet import clock
from fleet.models import Instance, ProvisioningState, ScaleSet
from upgrades.models import RunStatus, UpgradeRun

# Actions whose operation ends as the run they started ends.
RUN_ACTIONS = {"osRollingUpgrade", "extensionRollingUpgrade", "manualupgrade"}
CANCEL = "cancel"
# Actions on instances: done when the driver has nothing left to do on them.
INSTANCE_ACTIONS = {"reimage", "start", "restart", "powerOff", "deallocate"}

_RUN_OUTCOME = {
    RunStatus.COMPLETED: OperationStatus.SUCCEEDED,
    RunStatus.CANCELLED: OperationStatus.CANCELED,
    RunStatus.FAULTED: OperationStatus.FAILED,
}


def record(
    *,
    action: str,
    scale_set: ScaleSet,
    user: Any,
    run: UpgradeRun | None = None,
    instances: Sequence[Instance] = (),
) -> Operation:
    """The operation of an action just taken (call it in the action's transaction, so that an
    action refused writes no operation and an operation never lacks its action)."""
    return Operation.objects.create(
        action=action,
        scale_set=scale_set,
        subscription_id=scale_set.subscription_id,
        location=scale_set.region.name,
        run=run,
        instance_ids=[instance.instance_id for instance in instances],
        user=user if isinstance(user, User) else None,
        started_at=clock.now(),
    )


def settle(operation: Operation) -> Operation:
    """Bring the stored status up to date; a terminal one is kept from then on."""
    if operation.status != OperationStatus.IN_PROGRESS:
        return operation
    status, error = _observed(operation)
    if status == OperationStatus.IN_PROGRESS:
        return operation
    with transaction.atomic():
        # Compare-and-set: two pollers settling at once store one outcome.
        Operation.objects.filter(pk=operation.pk, status=OperationStatus.IN_PROGRESS).update(
            status=status, error=error, ended_at=clock.now()
        )
    operation.refresh_from_db()
    return operation


def _observed(operation: Operation) -> tuple[str, dict[str, Any] | None]:
    if operation.scale_set_id is None:
        return OperationStatus.FAILED, {"code": "ResourceNotFound", "message": "The scale set was deleted."}
    if operation.action == CANCEL or operation.action in RUN_ACTIONS:
        return _observed_run(operation)
    return _observed_instances(operation)


def _observed_run(operation: Operation) -> tuple[str, dict[str, Any] | None]:
    run = operation.run
    if run is None:
        return OperationStatus.FAILED, {"code": "NotFound", "message": "The upgrade run no longer exists."}
    if run.status == RunStatus.ROLLING_FORWARD:
        return OperationStatus.IN_PROGRESS, None
    if operation.action == CANCEL:
        return OperationStatus.SUCCEEDED, None  # the run stopped rolling forward: cancelled, or it ended first
    status = _RUN_OUTCOME[RunStatus(run.status)]
    if status == OperationStatus.FAILED:
        return status, run_error(run) or {"code": "RollingUpgradeFailed", "message": f"Run {run.pk} faulted."}
    return status, None


def _observed_instances(operation: Operation) -> tuple[str, dict[str, Any] | None]:
    instances = Instance.objects.filter(scale_set_id=operation.scale_set_id, instance_id__in=operation.instance_ids)
    if instances.filter(driver_due_at__isnull=False).exists():
        return OperationStatus.IN_PROGRESS, None
    if operation.action == "reimage":
        failed = list(
            instances.filter(provisioning_state=ProvisioningState.FAILED)
            .order_by("instance_id")
            .values_list("instance_id", "last_error")[:10]
        )
        if failed:
            details = [
                {"code": "ProvisioningFailed", "target": str(instance_id), "message": message or "Provisioning failed."}
                for instance_id, message in failed
            ]
            return OperationStatus.FAILED, {
                "code": "ProvisioningFailed",
                "message": f"Provisioning failed on instance {', '.join(str(i) for i, _ in failed)} after the reimage.",
                "details": details,
            }
    return OperationStatus.SUCCEEDED, None


# --- the wire ------------------------------------------------------------------------------------


def status_json(operation: Operation) -> dict[str, Any]:
    """The operation-status resource, as ARM's Azure-AsyncOperation URL answers it."""
    body: dict[str, Any] = {
        "name": str(operation.id),
        "status": operation.status,
        "startTime": operation.started_at.isoformat(),
    }
    if operation.ended_at is not None:
        body["endTime"] = operation.ended_at.isoformat()
    if operation.error:
        body["error"] = operation.error
    return body


def status_url(request: HttpRequest, operation: Operation, *, monitor: bool = False) -> str:
    path = (
        f"/subscriptions/{operation.subscription_id}/providers/Microsoft.Compute/locations/"
        f"{operation.location}/operations/{operation.id}"
    )
    query: dict[str, str] = {"api-version": request.GET.get("api-version", "")}
    if monitor:
        query["monitor"] = "true"
    return request.build_absolute_uri(f"{path}?{urlencode(query)}")


def _poll_headers(request: HttpRequest, operation: Operation) -> dict[str, str]:
    return {
        "Azure-AsyncOperation": status_url(request, operation),
        "Location": status_url(request, operation, monitor=True),
        "Retry-After": str(settings.API_RETRY_AFTER_SECONDS),
    }


def accepted(request: HttpRequest, operation: Operation) -> HttpResponse:
    """202 Accepted, with where to poll and how often."""
    response = HttpResponse(status=202)
    for name, value in _poll_headers(request, operation).items():
        response[name] = value
    return response


def status_response(request: HttpRequest, operation: Operation) -> HttpResponse:
    """GET on the Azure-AsyncOperation URL: always 200 with the status resource."""
    response = arm_json(status_json(operation))
    if operation.status == OperationStatus.IN_PROGRESS:
        response["Retry-After"] = str(settings.API_RETRY_AFTER_SECONDS)
    return response


def monitor_response(request: HttpRequest, operation: Operation) -> HttpResponse:
    """GET on the Location URL: 202 while in progress; 200 with no content once it succeeded
    (these actions return nothing); the operation's error once it failed or was cancelled."""
    if operation.status == OperationStatus.IN_PROGRESS:
        return accepted(request, operation)
    if operation.status == OperationStatus.SUCCEEDED:
        return HttpResponse(status=200)
    error = operation.error or {"code": "OperationCanceled", "message": "The operation was canceled."}
    raise ArmError(409, error.get("code", "OperationFailed"), error.get("message", ""), details=error.get("details"))
