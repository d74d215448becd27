"""The plan preview and the what-if through the API (beyond ARM, under /console/api/).

POST …/virtualMachineScaleSets/{name}/plan with
    {"action": "osRollingUpgrade" | "rolling" | "manualupgrade",
     "instanceIds"?: [...], "updateDomain"?: n, "faultDomain"?: n, "zone"?: "2",   (manualupgrade)
     "batchSize"?: n, "pauseSeconds"?: s,                                         (rolling)
     "failureShare"?: 0–1, "bootSeconds"?: 0–3600}                                (the what-if)
answers 200 with the plan (every batch with its update domain, zone and instance ids; the
rounding; the gates as instance counts; skipped instances; rollback; ETA) and `whatIf`.
Nothing is written: it is a read (viewers may ask), computed by the same code the action
runs (upgrades.preview → upgrades.services.plan_for). The refusals are the action's own:
409 OperationNotAllowed while a run rolls forward or when nothing is to be upgraded, 400
for bad input.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse

from api import selectors
from api.arm import ArmError, arm_json, arm_view
from api.catalog import Fields, body_object, invalid
from upgrades import preview
from upgrades.whatif import Overrides

ACTIONS = ("osRollingUpgrade", "rolling", "manualupgrade")
MOST_INSTANCE_IDS = 1000
MOST_DOMAIN = 99  # as the console's forms: a set has at most 1,000 instances
MOST_BATCH_SIZE = 1000
MOST_PAUSE_SECONDS = 86400
MOST_BOOT_SECONDS = 3600  # FaultProfile.boot_seconds' limit


@arm_view(write=False, methods=("POST",))
def scale_set_plan(request: HttpRequest, subscription_id: str, resource_group: str, name: str) -> HttpResponse:
    """The plan (dry run) of an upgrade action and its what-if; changes nothing."""
    scale_set = selectors.scale_set_get(subscription_id=subscription_id, resource_group=resource_group, name=name)
    body = body_object(request)
    action = body.string("action", max_length=40)
    if action not in ACTIONS:
        raise invalid("action", f"'{action}' is not an action to plan: use one of {', '.join(ACTIONS)}.")
    overrides = Overrides(
        failure_share=body.number("failureShare", low=0, high=1, default=None),
        boot_seconds=body.number("bootSeconds", low=0, high=MOST_BOOT_SECONDS, default=None),
    )
    if action == "osRollingUpgrade":
        shown = preview.os_upgrade_preview(scale_set=scale_set, overrides=overrides)
    elif action == "rolling":
        batch_size = _whole(body, "batchSize", 1, MOST_BATCH_SIZE)
        pause = body.number("pauseSeconds", low=0, high=MOST_PAUSE_SECONDS, default=None)
        shown = preview.rolling_preview(
            scale_set=scale_set, batch_size=batch_size, pause_seconds=pause, overrides=overrides
        )
    else:
        scope, what = _manual_scope(body)
        shown = preview.manual_preview(scale_set=scale_set, what=what, overrides=overrides, **scope)
    return arm_json(shown.as_json())


def _manual_scope(body: Fields) -> tuple[dict[str, Any], str]:
    """Exactly one of instanceIds, updateDomain, faultDomain, zone (R-MAN-1)."""
    given = [key for key in ("instanceIds", "updateDomain", "faultDomain", "zone") if body.has(key)]
    if len(given) != 1:
        raise ArmError(
            400,
            "InvalidParameter",
            "Name what to upgrade with exactly one of instanceIds, updateDomain, faultDomain or zone.",
            target="instanceIds",
        )
    key = given[0]
    if key == "instanceIds":
        ids = body.array("instanceIds", max_items=MOST_INSTANCE_IDS) or []
        if not ids or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids):
            raise invalid("instanceIds", "instanceIds must be a non-empty list of instance ids.")
        if "*" in ids:
            return {"instance_ids": "*"}, "every instance"
        return {"instance_ids": [str(i) for i in ids]}, f"instances {', '.join(str(i) for i in ids)}"
    if key == "zone":
        zone = body.string("zone", max_length=8)
        return {"zone": zone}, f"zone {zone}"
    number = _whole(body, key, 0, MOST_DOMAIN)
    if key == "updateDomain":
        return {"update_domain": number}, f"update domain {number}"
    return {"fault_domain": number}, f"fault domain {number}"


def _whole(body: Fields, name: str, low: int, high: int) -> int | None:
    value = body.number(name, low=low, high=high, default=None)
    if value is None:
        return None
    if not float(value).is_integer():
        raise invalid(name, f"'{name}' must be a whole number.")
    return int(value)
