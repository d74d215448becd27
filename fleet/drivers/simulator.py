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
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.db.models import Field

from fleet import clock, events
from fleet.credentials import expired_by
from fleet.drivers.base import PowerAction, first_time
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
    "driver_operations",
]
# What applying due steps can change (`advance` writes these only).
_ADVANCED = _PLAN_FIELDS + ["driver_due_at", "driver_plan"]


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
        # (key, fault) -> chosen ids: ranking the whole set once per key, not once per instance
        # (ranking per instance was quadratic: 3 s of hashing to reimage 1,000 instances).
        self._chosen_ids: dict[tuple[str, str], set[int]] = {}

    # --- the interface --------------------------------------------------------------------

    def reimage(self, instances: Sequence[Instance], image: ImageRef, *, operation: str) -> None:
        self._act(
            instances,
            lambda inst, plan: self._plan_reimage(inst, plan, image),
            extra_keys=[image.key],
            operation=operation,
        )

    def restore_previous_os_disk(self, instances: Sequence[Instance], *, operation: str) -> None:
        self._act(instances, self._plan_restore, operation=operation)

    def power(self, instances: Sequence[Instance], action: PowerAction) -> None:
        planners = {
            PowerAction.START: self._plan_start,
            PowerAction.RESTART: self._plan_restart,
            PowerAction.POWER_OFF: self._plan_power_off,
            PowerAction.DEALLOCATE: self._plan_deallocate,
        }
        self._act(instances, planners[action])

    def install_extensions(
        self, instances: Sequence[Instance], versions: dict[str, str], *, operation: str = ""
    ) -> None:
        self._act(instances, lambda inst, plan: self._plan_extensions(inst, plan, versions), operation=operation)

    def set_maintenance(self, instances: Sequence[Instance], *, on: bool) -> None:
        def plan_maintenance(instance: Instance, plan: _Plan) -> None:
            instance.under_maintenance = on
            if instance.power_state != PowerState.RUNNING:
                return  # the next boot settles health, maintenance included
            if on:
                # At once, even with an action in flight (an extension install keeps the
                # instance Healthy meanwhile); `_apply_due` keeps its later Healthy away.
                instance.health_state = HealthState.UNHEALTHY
            elif not instance.driver_plan and instance.provisioning_state == ProvisioningState.SUCCEEDED:
                # (an action in flight settles health itself)
                self._settle_health(instance, plan, instance.os_image, instance.extension_states, immediate=True)

        self._act(instances, plan_maintenance)

    def advance(self, now: dt.datetime) -> int:
        if not Instance.objects.filter(scale_set=self.scale_set, driver_due_at__lte=now).exists():
            return 0  # nothing due: no write transaction (on SQLite, no write lock)
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
            extension_states={},  # the new OS disk has no extension yet; _boot provisions them
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
        failed: list[str] = []
        for name, version in versions.items():
            self._provision(instance, plan, name, version, states, failed)  # one by one (R-EXT-3)
        # R-H-3: a stopped or deallocated instance gets its extensions but never turns healthy.
        running = instance.power_state == PowerState.RUNNING
        self._finish_provisioning(instance, plan, states, failed, instance.os_image, settle_health=running)

    def _boot(self, instance: Instance, plan: _Plan, image_key: str, *, provision_extensions: bool) -> None:
        plan.then(power_state=PowerState.STARTING)
        plan.wait(self._boot_seconds(image_key))
        plan.then(power_state=PowerState.RUNNING)
        states = dict(instance.extension_states)
        failed: list[str] = []
        if instance.instance_id in self._chosen(image_key, "provisioning"):
            failed.append("OS provisioning")
        if provision_extensions:
            states = {}  # a new OS disk holds the model's extensions only, none of an old model's
            for ext in self._extensions_in_order():
                self._provision(instance, plan, ext.name, ext.effective_version, states, failed)
        self._finish_provisioning(instance, plan, states, failed, image_key)

    def _provision(
        self, instance: Instance, plan: _Plan, name: str, version: str, states: dict[str, Any], failed: list[str]
    ) -> None:
        """Provision one extension version: it fails by its fault knob, or when its protected
        settings hold a credential expired by then (R-CRED-1). Each extension's state shows
        when it is done, so the provisionAfterExtensions order is visible (R-UPG-1)."""
        plan.wait(self.durations.extension)
        problem = ""
        if instance.instance_id in self._chosen(self._extension_key(name, version), "provisioning"):
            problem = f"{name} {version}"
        elif expired := expired_by(self._extension(name), plan.at):
            problem = f"{name} {version} (its credential expired on {expired})"
        states[name] = {"version": version, "state": "Failed" if problem else "Succeeded"}
        if problem:
            failed.append(problem)
        plan.then(extension_states=dict(states))

    def _finish_provisioning(
        self,
        instance: Instance,
        plan: _Plan,
        states: dict[str, Any],
        failed: list[str],
        image_key: str,
        *,
        settle_health: bool = True,
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
        if settle_health:
            self._settle_health(instance, plan, image_key, states, immediate=False)

    def _settle_health(
        self, instance: Instance, plan: _Plan, image_key: str, states: dict[str, Any], *, immediate: bool
    ) -> None:
        """Health after a boot, by the set's health source (R-H-1..3) and the fate of the image
        and of the extension versions installed (`states`: an extension upgrade may install a
        version the model does not name, R-EXT-1)."""
        source = self._health_source()
        extension_keys = [self._extension_key(name, state.get("version", "")) for name, state in states.items()]
        never_healthy = instance.instance_id in self._chosen(image_key, "never_healthy") or any(
            instance.instance_id in self._chosen(key, "never_healthy") for key in extension_keys
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
        self, instances: Sequence[Instance], planner: Any, *, extra_keys: Sequence[str] = (), operation: str = ""
    ) -> None:
        """Lock the rows, give each a new plan, apply what is due at once, publish on commit.

        With an `operation` id, an instance acts at most once per id: the id is recorded in
        the same transaction as the plan, so a call repeated after a crash changes nothing."""
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
                if not first_time(row, operation):
                    continue
                plan = _Plan(now)
                planner(row, plan)
                if not plan.steps and row.driver_plan:
                    # Nothing new to do (start on a running instance, maintenance): the action
                    # in flight must still finish, so its pending plan stays as it is.
                    continue
                if row.driver_plan and row.provisioning_state in _BUSY_PROVISIONING:
                    # A new action cuts short an upgrade in flight (a power-off mid-reimage):
                    # that provisioning failed, as it would on a real host; it never finishes.
                    first = plan.steps[0]["set"]
                    plan.steps[0]["set"] = {
                        "provisioning_state": ProvisioningState.FAILED,
                        "last_error": "Provisioning was interrupted by another action.",
                        **first,
                    }
                row.driver_plan = plan.steps
                _apply_due(row, now)
            _save(rows, _WRITTEN)
            due = [row.driver_due_at for row in rows if row.driver_due_at is not None]
            if due:
                # Before the pages are told: the first step of the new plans is applied on
                # time, not at the next beat tick (fleet.tasks.simulator_tick_at).
                transaction.on_commit(lambda: _tick_at(min(due)))
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

    def _extension_key(self, name: str, version: str) -> str:
        """publisher.type@version of the model's extension `name` (name@version if unknown)."""
        ext = self._extension(name)
        return f"{ext.publisher}.{ext.type}@{version}" if ext else f"{name}@{version}"

    def _load_profiles(self, keys: Iterable[str]) -> None:
        missing = {k for k in keys if k and k not in self._profiles}
        if missing:
            found = {p.target: p for p in FaultProfile.objects.filter(target__in=missing)}
            for key in missing:
                self._profiles[key] = found.get(key) or FaultProfile(target=key)

    def _chosen(self, key: str, fault: str) -> set[int]:
        if (key, fault) not in self._chosen_ids:
            self._chosen_ids[key, fault] = self._choose(key, fault)
        return self._chosen_ids[key, fault]

    def _choose(self, key: str, fault: str) -> set[int]:
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


def _tick_at(due: dt.datetime) -> None:
    from fleet.tasks import simulator_tick_at

    simulator_tick_at(due)


_BUSY_PROVISIONING = (ProvisioningState.UPDATING, ProvisioningState.CREATING)


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
    if not (number.isascii() and number.isdigit()):
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


@dataclass(frozen=True)
class Advanced:
    """What one `advance_steps` did: how many rows had due steps, and which instances (by
    scale set) changed state."""

    applied: int
    changed: dict[int, list[int]]


def advance(now: dt.datetime, *, scale_set_ids: Sequence[int] | None = None, limit: int = 5000) -> int:
    """Apply every simulated step due by `now` (the beat task calls this each second)."""
    return advance_steps(now, scale_set_ids=scale_set_ids, limit=limit).applied


def advance_steps(now: dt.datetime, *, scale_set_ids: Sequence[int] | None = None, limit: int = 5000) -> Advanced:
    """`advance`, telling which instances changed."""
    with transaction.atomic():
        due = Instance.objects.select_for_update().filter(driver_due_at__lte=now, scale_set__driver="simulator")
        if scale_set_ids is not None:
            due = due.filter(scale_set_id__in=scale_set_ids)
        # Only what applying steps reads and writes: the rest of the row (disks, operation
        # ids …) is neither decoded nor written back.
        due = due.only("pk", "scale_set_id", "under_maintenance", *_ADVANCED)
        rows = list(due.order_by("driver_due_at", "pk")[:limit])
        changed_by_set: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            if _apply_due(row, now):
                changed_by_set[row.scale_set_id].append(row.pk)
        _save(rows, _ADVANCED)
        for scale_set_id, pks in changed_by_set.items():
            events.instances_changed(scale_set_id, pks)
    return Advanced(applied=len(rows), changed=dict(changed_by_set))


def next_due_at() -> dt.datetime | None:
    """When the next simulated step falls due, over every simulator set (indexed)."""
    return (
        Instance.objects.filter(driver_due_at__isnull=False, scale_set__driver="simulator")
        .order_by("driver_due_at")
        .values_list("driver_due_at", flat=True)
        .first()
    )


# --- writing many rows at once -------------------------------------------------------------

_IN_CHUNK = 500  # pks per `pk IN (…)`: well under every backend's parameter limit


def _save(rows: Sequence[Instance], fields: Sequence[str]) -> None:
    """Write `fields` of `rows` (already locked) in few statements.

    The rows of a batch mostly hold equal values (one plan, one state for 200 instances): a
    field equal in every row is set by one UPDATE … WHERE pk IN (…); the others are grouped
    by their values, one UPDATE per group of two or more rows, and the rows left (values of
    their own, like an OS disk name) by one executemany of a per-row UPDATE. Django's
    bulk_update builds a CASE WHEN per row and field instead: 0.7 s of query building per
    200-row reimage on SQLite (docs/PERFORMANCE.md)."""
    if not rows:
        return
    keys = {field: [_value_key(getattr(row, field)) for row in rows] for field in fields}
    constant = [field for field in fields if len(set(keys[field])) == 1]
    varying = [field for field in fields if field not in constant]
    if constant:
        values = {field: getattr(rows[0], field) for field in constant}
        _update_in(Instance, [row.pk for row in rows], values)
    if not varying:
        return
    groups: dict[tuple[Any, ...], list[Instance]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[tuple(keys[field][index] for field in varying)].append(row)
    singles: list[Instance] = []
    for members in groups.values():
        if len(members) == 1:
            singles.extend(members)
        else:
            _update_in(Instance, [row.pk for row in members], {f: getattr(members[0], f) for f in varying})
    if singles:
        _update_each(Instance, singles, varying)


def _value_key(value: Any) -> Any:
    """A hashable stand-in for a field value, equal for equal values (JSON by its text)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, cls=DjangoJSONEncoder)
    return value


def _update_in(model: type[Instance], pks: list[int], values: dict[str, Any]) -> None:
    for start in range(0, len(pks), _IN_CHUNK):
        model.objects.filter(pk__in=pks[start : start + _IN_CHUNK]).update(**values)


def _update_each(model: type[Instance], rows: Sequence[Instance], fields: Sequence[str]) -> None:
    """One parameterised UPDATE per row, sent as one executemany (the ORM has no per-row
    bulk form but bulk_update's CASE WHEN); values prepared by the fields, as the ORM does."""
    meta = model._meta
    columns: list[Field[Any, Any]] = []
    for name in fields:
        column = meta.get_field(name)
        assert isinstance(column, Field)  # a concrete column of this table
        assert column.column
        columns.append(column)
    assert meta.pk is not None
    assert meta.pk.column
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(str(column.column))} = %s" for column in columns)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"
    params = [
        [column.get_db_prep_save(getattr(row, column.attname), connection) for column in columns] + [row.pk]
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
