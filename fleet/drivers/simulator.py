"""The simulator driver: a digital twin of a scale set, its truth kept in the database.

An action writes each instance's coming state changes (stopping, starting, running, health
settled …) as a plan of due steps on the instance row; `advance(now)`, called by a beat task
every second, applies the steps that fell due. Nothing sleeps, so a worker killed at any
moment loses nothing: the plan is in the row.

Durations are simulated seconds (clock.after compresses them by TIME_SCALE). Faults come
from FaultProfile rows, per image version and per extension version: which instances fail is
chosen by ranking the set's instance ids on a seeded hash, so a share of 0.3 is exactly 30 %
of the set, and the same seed always picks the same instances (SPEC 8).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction

from fleet import clock, events
from fleet.drivers.base import PowerAction
from fleet.health import HealthSource, health_source_of
from fleet.images import ImageRef
from fleet.models import (
    FaultProfile,
    HealthState,
    Instance,
    PowerState,
    ProvisioningState,
    ScaleSet,
    ScaleSetExtension,
)


@dataclass(frozen=True)
class Durations:
    """Simulated seconds each step takes (realistic defaults; the benchmark uses zeros)."""

    reimage: float = 30.0
    boot: float = 45.0
    extension: float = 10.0
    stop: float = 10.0
    deallocate: float = 20.0


def configured_durations() -> Durations:
    overrides: dict[str, float] = getattr(settings, "SIMULATOR_DURATIONS", {}) or {}
    return Durations(**overrides)


# Fields a plan step may set, and so the fields `advance` writes back.
_PLAN_FIELDS = [
    "power_state",
    "provisioning_state",
    "health_state",
    "extension_states",
    "last_error",
]
_WRITTEN = _PLAN_FIELDS + [
    "os_disk",
    "os_image",
    "previous_os_disk",
    "previous_os_image",
    "under_maintenance",
    "driver_due_at",
    "driver_plan",
]


def chosen_share(instance_ids: Iterable[int], *, share: float, salt: str) -> set[int]:
    """Exactly round(share × count) of the ids, picked by a seeded hash: deterministic."""
    ids = sorted(set(instance_ids))
    count = round(share * len(ids))
    if count <= 0:
        return set()
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{salt}|{i}".encode()).digest())
    return set(ranked[:count])


class _Plan:
    """The steps of one instance, built forward in simulated time from `start`."""

    def __init__(self, start: dt.datetime) -> None:
        self.at = start
        self.steps: list[dict[str, Any]] = []

    def wait(self, simulated_seconds: float) -> None:
        self.at = clock.after(simulated_seconds, start=self.at)

    def then(self, **fields: Any) -> None:
        self.steps.append({"at": self.at.isoformat(), "set": fields})


class SimulatorDriver:
    """Driver for one scale set (see fleet.drivers.base.Driver for the contract)."""

    def __init__(self, scale_set: ScaleSet, *, durations: Durations | None = None) -> None:
        self.scale_set = scale_set
        self.durations = durations or configured_durations()
        self._extensions: list[ScaleSetExtension] | None = None
        self._all_ids: list[int] | None = None
        self._profiles: dict[str, FaultProfile] = {}

    # --- the interface --------------------------------------------------------------------

    def reimage(self, instances: Sequence[Instance], image: ImageRef) -> None:
        self._act(instances, lambda inst, plan: self._plan_reimage(inst, plan, image), extra_keys=[image.key])

    def restore_previous_os_disk(self, instances: Sequence[Instance]) -> None:
        self._act(instances, self._plan_restore)

    def power(self, instances: Sequence[Instance], action: PowerAction) -> None:
        planners = {
            PowerAction.START: self._plan_start,
            PowerAction.RESTART: self._plan_restart,
            PowerAction.POWER_OFF: self._plan_power_off,
            PowerAction.DEALLOCATE: self._plan_deallocate,
        }
        self._act(instances, planners[action])

    def install_extensions(self, instances: Sequence[Instance], versions: dict[str, str]) -> None:
        self._act(instances, lambda inst, plan: self._plan_extensions(inst, plan, versions))

    def set_maintenance(self, instances: Sequence[Instance], *, on: bool) -> None:
        def plan_maintenance(instance: Instance, plan: _Plan) -> None:
            instance.under_maintenance = on
            if instance.power_state != PowerState.RUNNING or instance.driver_plan:
                return  # an action in flight settles health itself, maintenance included
            if on:
                plan.then(health_state=HealthState.UNHEALTHY)
            elif instance.provisioning_state == ProvisioningState.SUCCEEDED:
                self._settle_health(instance, plan, instance.os_image, immediate=True)

        self._act(instances, plan_maintenance, keep_pending=True)

    def advance(self, now: dt.datetime) -> int:
        return advance(now, scale_set_ids=[self.scale_set.pk])

    # --- plans ----------------------------------------------------------------------------

    def _plan_reimage(self, instance: Instance, plan: _Plan, image: ImageRef) -> None:
        # The OS disk is swapped at once (the old one kept for rollback); data disks are
        # separate rows that no driver action touches (R-UPG-1).
        instance.previous_os_disk, instance.previous_os_image = instance.os_disk, instance.os_image
        instance.os_disk, instance.os_image = _next_os_disk(instance), image.key
        plan.then(
            provisioning_state=ProvisioningState.UPDATING,
            power_state=PowerState.STOPPING,
            health_state=HealthState.UNKNOWN,
            last_error="",
        )
        plan.wait(self.durations.reimage)
        self._boot(instance, plan, image.key, provision_extensions=True)

    def _plan_restore(self, instance: Instance, plan: _Plan) -> None:
        if not instance.previous_os_disk:
            plan.then(last_error="No previous OS disk to roll back to.")
            return
        instance.os_disk, instance.previous_os_disk = instance.previous_os_disk, ""
        instance.os_image, instance.previous_os_image = instance.previous_os_image, ""
        plan.then(
            provisioning_state=ProvisioningState.UPDATING,
            power_state=PowerState.STOPPING,
            health_state=HealthState.UNKNOWN,
            last_error="",
        )
        plan.wait(self.durations.stop)
        self._boot(instance, plan, instance.os_image, provision_extensions=False)

    def _plan_start(self, instance: Instance, plan: _Plan) -> None:
        if instance.power_state == PowerState.RUNNING:
            return
        self._boot(instance, plan, instance.os_image, provision_extensions=False)

    def _plan_restart(self, instance: Instance, plan: _Plan) -> None:
        plan.then(power_state=PowerState.STOPPING, health_state=HealthState.UNKNOWN)
        plan.wait(self.durations.stop)
        self._boot(instance, plan, instance.os_image, provision_extensions=False)

    def _plan_power_off(self, instance: Instance, plan: _Plan) -> None:
        plan.then(power_state=PowerState.STOPPING, health_state=HealthState.UNKNOWN)
        plan.wait(self.durations.stop)
        plan.then(power_state=PowerState.STOPPED)

    def _plan_deallocate(self, instance: Instance, plan: _Plan) -> None:
        plan.then(power_state=PowerState.DEALLOCATING, health_state=HealthState.UNKNOWN)
        plan.wait(self.durations.deallocate)
        plan.then(power_state=PowerState.DEALLOCATED)

    def _plan_extensions(self, instance: Instance, plan: _Plan, versions: dict[str, str]) -> None:
        plan.then(provisioning_state=ProvisioningState.UPDATING)
        states = dict(instance.extension_states)
        failed = []
        for name, version in versions.items():
            plan.wait(self.durations.extension)
            ext = self._extension(name)
            key = f"{ext.publisher}.{ext.type}@{version}" if ext else f"{name}@{version}"
            ok = instance.instance_id not in self._chosen(key, "provisioning")
            states[name] = {"version": version, "state": "Succeeded" if ok else "Failed"}
            if not ok:
                failed.append(f"{name} {version}")
        self._finish_provisioning(instance, plan, states, failed, instance.os_image)

    def _boot(self, instance: Instance, plan: _Plan, image_key: str, *, provision_extensions: bool) -> None:
        plan.then(power_state=PowerState.STARTING)
        plan.wait(self._boot_seconds(image_key))
        plan.then(power_state=PowerState.RUNNING)
        states = dict(instance.extension_states)
        failed = []
        if instance.instance_id in self._chosen(image_key, "provisioning"):
            failed.append("OS provisioning")
        if provision_extensions:
            for ext in self._extensions_in_order():
                plan.wait(self.durations.extension)
                ok = instance.instance_id not in self._chosen(ext.key, "provisioning")
                states[ext.name] = {"version": ext.type_handler_version, "state": "Succeeded" if ok else "Failed"}
                if not ok:
                    failed.append(f"{ext.name} {ext.type_handler_version}")
        self._finish_provisioning(instance, plan, states, failed, image_key)

    def _finish_provisioning(
        self, instance: Instance, plan: _Plan, states: dict[str, Any], failed: list[str], image_key: str
    ) -> None:
        if failed:
            plan.then(
                extension_states=states,
                provisioning_state=ProvisioningState.FAILED,
                health_state=HealthState.UNHEALTHY,  # R-H-3: not every extension provisioned
                last_error="Provisioning failed: " + ", ".join(failed),
            )
            return
        plan.then(extension_states=states, provisioning_state=ProvisioningState.SUCCEEDED)
        self._settle_health(instance, plan, image_key, immediate=False)

    def _settle_health(self, instance: Instance, plan: _Plan, image_key: str, *, immediate: bool) -> None:
        """Health after a boot, by the set's health source (R-H-1..3) and the image's fate."""
        source = self._health_source()
        never_healthy = instance.instance_id in self._chosen(image_key, "never_healthy") or any(
            instance.instance_id in self._chosen(key, "never_healthy") for key in self._extension_keys()
        )
        if not source.kind:
            plan.then(health_state=HealthState.HEALTHY)  # R-H-3: running, extensions provisioned
            return
        if immediate:
            plan.then(health_state=source.unanswered_state if never_healthy else HealthState.HEALTHY)
            return
        plan.then(health_state=HealthState.INITIALIZING)
        if never_healthy:
            plan.wait(source.grace_period_seconds)
            plan.then(health_state=source.unanswered_state, last_error="Application never reported healthy.")
        else:
            plan.wait(source.settle_seconds)
            plan.then(health_state=HealthState.HEALTHY)

    # --- machinery ------------------------------------------------------------------------

    def _act(
        self, instances: Sequence[Instance], planner: Any, *, extra_keys: Sequence[str] = (), keep_pending: bool = False
    ) -> None:
        """Lock the rows, give each a new plan, apply what is due at once, publish on commit."""
        if not instances:
            return
        pks = [i.pk for i in instances]
        now = clock.now()
        self._load_profiles(
            list(extra_keys) + [i.os_image for i in instances] + [i.previous_os_image for i in instances]
        )
        with transaction.atomic():
            rows = list(Instance.objects.select_for_update().filter(pk__in=pks).order_by("pk"))
            for row in rows:
                plan = _Plan(now)
                planner(row, plan)
                if keep_pending and row.driver_plan:
                    continue  # maintenance flag recorded; the pending plan stays as it is
                row.driver_plan = plan.steps
                _apply_due(row, now)
            Instance.objects.bulk_update(rows, _WRITTEN)
            events.instances_changed(self.scale_set.pk, pks)

    def _health_source(self) -> HealthSource:
        return health_source_of(self.scale_set, self._extensions_in_order())

    def _extensions_in_order(self) -> list[ScaleSetExtension]:
        """The model's extensions, each after those it names in provisionAfterExtensions."""
        if self._extensions is None:
            extensions = list(self.scale_set.extensions.order_by("name"))
            self._load_profiles([e.key for e in extensions])
            self._extensions = _provision_order(extensions)
        return self._extensions

    def _extension(self, name: str) -> ScaleSetExtension | None:
        return next((e for e in self._extensions_in_order() if e.name == name), None)

    def _extension_keys(self) -> list[str]:
        return [e.key for e in self._extensions_in_order()]

    def _load_profiles(self, keys: Iterable[str]) -> None:
        missing = {k for k in keys if k and k not in self._profiles}
        if missing:
            found = {p.target: p for p in FaultProfile.objects.filter(target__in=missing)}
            for key in missing:
                self._profiles[key] = found.get(key) or FaultProfile(target=key)

    def _chosen(self, key: str, fault: str) -> set[int]:
        self._load_profiles([key])
        profile = self._profiles[key]
        share = profile.never_healthy_share if fault == "never_healthy" else profile.provisioning_failure_share
        if not share:
            return set()
        if self._all_ids is None:
            self._all_ids = list(self.scale_set.instances.values_list("instance_id", flat=True))
        salt = f"{settings.SIMULATOR_SEED}|{self.scale_set.resource_id}|{key}|{fault}"
        return chosen_share(self._all_ids, share=share, salt=salt)

    def _boot_seconds(self, image_key: str) -> float:
        self._load_profiles([image_key])
        boot = self._profiles[image_key].boot_seconds
        return self.durations.boot if boot is None else boot


def _provision_order(extensions: list[ScaleSetExtension]) -> list[ScaleSetExtension]:
    """provisionAfterExtensions as a topological order; names not in the model are ignored."""
    by_name = {e.name: e for e in extensions}
    ordered: list[ScaleSetExtension] = []
    visiting: set[str] = set()

    def visit(ext: ScaleSetExtension) -> None:
        if ext in ordered or ext.name in visiting:
            return
        visiting.add(ext.name)
        for dependency in ext.provision_after_extensions:
            if dependency in by_name:
                visit(by_name[dependency])
        ordered.append(ext)

    for ext in extensions:
        visit(ext)
    return ordered


def _next_os_disk(instance: Instance) -> str:
    """OS disks are named <set>_<id>_OsDisk_<n>, n counting every disk the instance had."""
    prefix, _, number = instance.os_disk.rpartition("_")
    if not number.isdigit():
        return f"{instance.os_disk}_OsDisk_2"
    return f"{prefix}_{int(number) + 1}"


def _apply_due(instance: Instance, now: dt.datetime) -> bool:
    """Apply the plan's steps due by `now`; maintenance keeps a running instance unhealthy."""
    changed = False
    remaining: list[dict[str, Any]] = []
    for step in instance.driver_plan:
        if dt.datetime.fromisoformat(step["at"]) <= now and not remaining:
            for field, value in step["set"].items():
                if field == "health_state" and value == HealthState.HEALTHY and instance.under_maintenance:
                    value = HealthState.UNHEALTHY
                setattr(instance, field, value)
            changed = True
        else:
            remaining.append(step)
    instance.driver_plan = remaining
    instance.driver_due_at = dt.datetime.fromisoformat(remaining[0]["at"]) if remaining else None
    return changed


def advance(now: dt.datetime, *, scale_set_ids: Sequence[int] | None = None, limit: int = 5000) -> int:
    """Apply every simulated step due by `now` (the beat task calls this each second)."""
    with transaction.atomic():
        due = Instance.objects.select_for_update().filter(driver_due_at__lte=now, scale_set__driver="simulator")
        if scale_set_ids is not None:
            due = due.filter(scale_set_id__in=scale_set_ids)
        rows = list(due.order_by("driver_due_at", "pk")[:limit])
        changed_by_set: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            if _apply_due(row, now):
                changed_by_set[row.scale_set_id].append(row.pk)
        Instance.objects.bulk_update(rows, _WRITTEN, batch_size=500)
        for scale_set_id, pks in changed_by_set.items():
            events.instances_changed(scale_set_id, pks)
    return len(rows)
