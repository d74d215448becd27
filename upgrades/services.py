"""Business actions on upgrades: start, cancel, manual upgrade, reimage, model change.

Each validates first and writes in one transaction; the engine then moves the run forward
(upgrades.engine), woken by a task enqueued on commit and by the beat reconciler.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from fleet import audit, clock
from fleet import events as fleet_events
from fleet.auto_upgrade import validate_automatic_os_upgrade
from fleet.drivers import driver_for
from fleet.health import health_source_of, validate_health_sources
from fleet.images import ImageRef
from fleet.models import ImageSource, Instance, ProvisioningState, ScaleSet, ScaleSetExtension, UpgradeMode
from fleet.selectors import pinned_version_missing, target_image
from fleet.services import instances_add, instances_named, instances_remove, instances_select
from fleet.versions import parse_version
from upgrades import events
from upgrades.errors import NothingToUpgrade, OperationNotAllowed, ScaleSetBusy
from upgrades.models import (
    InstanceOutcome,
    Kind,
    LastAction,
    OutcomeStatus,
    Phase,
    RunEvent,
    RunStatus,
    StartedBy,
    UpgradeBatch,
    UpgradeRun,
)
from upgrades.planner import Candidate, Plan, Policy, plan_batches
from upgrades.rollouts import extension_needs

NO_RUN_TO_CANCEL = "There is no ongoing Rolling Upgrade to cancel."
_OS_KINDS = {Kind.AUTOMATIC_OS, Kind.MANUAL_OS}


def policy_for(
    scale_set: ScaleSet,
    *,
    all_at_once: bool = False,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
) -> Policy:
    """The set's rolling-upgrade policy as a run will run under it (SPEC 3.1)."""
    source = health_source_of(scale_set, list(scale_set.extensions.all()))
    if batch_size is not None and batch_size < 1:
        raise ValidationError({"batch_size": "A batch holds at least one instance."})
    if pause_seconds is not None and pause_seconds < 0:
        raise ValidationError({"pause_seconds": "A pause cannot be negative."})
    return Policy(
        max_batch_instance_percent=scale_set.max_batch_instance_percent,
        max_unhealthy_instance_percent=scale_set.max_unhealthy_instance_percent,
        max_unhealthy_upgraded_instance_percent=scale_set.max_unhealthy_upgraded_instance_percent,
        pause_seconds=(pause_seconds if pause_seconds is not None else scale_set.pause_between_batches.total_seconds()),
        enable_cross_zone_upgrade=scale_set.enable_cross_zone_upgrade,
        prioritize_unhealthy_instances=scale_set.prioritize_unhealthy_instances,
        rollback_failed_instances_on_policy_breach=scale_set.rollback_failed_instances_on_policy_breach,
        disable_automatic_rollback=scale_set.disable_automatic_rollback,
        health_wait_seconds=source.health_wait_seconds,
        batch_size=batch_size,
        all_at_once=all_at_once,
    )


@dataclass(frozen=True)
class PlannedRun:
    """What a run would be: its target, policy and batches, computed before anything is
    written. `run_start` writes exactly this; the plan preview (upgrades.preview) shows it."""

    scale_set: ScaleSet
    kind: str
    target: ImageRef
    policy: Policy
    plan: Plan
    scope: list[Instance]  # the chosen instances (the whole set unless instance ids narrow it)
    every: list[Instance]  # every instance of the set, by id (the gates count over all of them)
    previous_extensions: dict[str, str]


def plan_for(
    *,
    scale_set: ScaleSet,
    kind: str,
    instance_ids: Sequence[int | str] | str | None = None,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
    all_at_once: bool = False,
    image: ImageRef | None = None,
    extensions: dict[str, str] | None = None,
) -> PlannedRun:
    """Validate and plan a run without writing anything: the ONE computation of candidates,
    policy and batches that both `run_start` and the plan preview use, so what an operator
    confirms is what runs (R-BATCH-1, R-BATCH-2).

    Refuses like run_start: ValidationError for bad input, NothingToUpgrade when no batch
    would hold an instance. Queries do not grow with the number of instances.
    """
    if kind not in Kind.values:
        raise ValidationError({"kind": f"'{kind}' is not a kind of upgrade."})
    target = image or target_image(scale_set)
    if target is None:
        raise ValidationError("No version of the set's image is available in its region: nothing to upgrade to.")
    if kind == Kind.AUTOMATIC_OS and scale_set.image_source == ImageSource.CUSTOM:
        raise ValidationError("Automatic OS upgrades do not support custom image URIs.")
    previous: dict[str, str] = {}
    if kind == Kind.EXTENSION:
        previous = _extension_upgrade_checked(scale_set, extensions or {})
    policy = policy_for(scale_set, all_at_once=all_at_once, batch_size=batch_size, pause_seconds=pause_seconds)
    every = list(scale_set.instances.order_by("instance_id"))
    scope = every if instance_ids in (None, "*", ["*"]) else instances_select(scale_set, instance_ids)
    if kind == Kind.EXTENSION:
        wanted = extensions or {}
        candidates = [_extension_candidate(i, wanted) for i in scope]
    else:
        candidates = [_candidate(i, kind, target.key, scale_set.model_version) for i in scope]
    plan = plan_batches(candidates, policy, set_instance_count=len(every))
    if not plan.batches:
        raise NothingToUpgrade(_nothing_to_do(kind, scope, plan.skipped))
    return PlannedRun(
        scale_set=scale_set,
        kind=kind,
        target=target,
        policy=policy,
        plan=plan,
        scope=scope,
        every=every,
        previous_extensions=previous,
    )


def scale_set_busy(scale_set: ScaleSet) -> bool:
    """R-ONE-1: whether a run rolls forward on the set now."""
    return UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).exists()


def busy_refusal(scale_set: ScaleSet) -> ScaleSetBusy:
    return ScaleSetBusy(_busy(scale_set))


def run_start(
    *,
    scale_set: ScaleSet,
    kind: str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    started_by: str = StartedBy.USER,
    instance_ids: Sequence[int | str] | str | None = None,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
    all_at_once: bool = False,
    image: ImageRef | None = None,
    extensions: dict[str, str] | None = None,
) -> UpgradeRun:
    """Validate, snapshot the policy, plan the batches (plan_for) and write the run in one
    transaction.

    R-ONE-1: refused with OperationNotAllowed while another run rolls forward on the set; the
    partial unique constraint makes that hold for concurrent starts too. `instance_ids`
    narrows the run to those instances (manual upgrades; '*' for all). `image` pins the
    target (a rollout's version; by default the model's image, 'latest' resolved now).
    An extension upgrade installs `extensions` ({name: version}) and leaves the OS disk.
    """
    planned = plan_for(
        scale_set=scale_set,
        kind=kind,
        instance_ids=instance_ids,
        batch_size=batch_size,
        pause_seconds=pause_seconds,
        all_at_once=all_at_once,
        image=image,
        extensions=extensions,
    )
    target, policy, plan, scope = planned.target, planned.policy, planned.plan, planned.scope
    now = clock.now()
    try:
        with transaction.atomic():
            if scale_set_busy(scale_set):
                raise ScaleSetBusy(_busy(scale_set))
            run = UpgradeRun.objects.create(
                scale_set=scale_set,
                kind=kind,
                started_by=started_by,
                actor=actor if isinstance(actor, User) else None,
                last_action=LastAction.START,
                last_action_at=now,
                started_at=now,
                next_action_at=now,
                target_image="" if kind == Kind.EXTENSION else target.key,
                target_model_version=scale_set.model_version,
                target_extensions=extensions or {} if kind == Kind.EXTENSION else {},
                previous_extensions=planned.previous_extensions,
                policy=policy.__dict__,
                batch_count=len(plan.batches),
                pending_count=len(plan.targeted_ids),
                skipped_count=len(plan.skipped),
            )
            _write_plan(run, plan, scope, now)
            audit.record(
                "run.start",
                f"{run.get_kind_display()} #{run.pk} to {run.target_label or 'the model'}: "
                f"{len(plan.targeted_ids)} instances in {len(plan.batches)} batches",
                scale_set=scale_set,
                run_id=run.pk,
                actor=actor,
                details={"kind": kind, "instances": len(plan.targeted_ids), "batches": len(plan.batches)},
            )
    except IntegrityError:
        # The partial unique index caught a start that raced ours (R-ONE-1).
        raise ScaleSetBusy(_busy(scale_set)) from None
    _enqueue_on_commit(run.pk)
    return run


def _candidate(instance: Instance, kind: str, target_key: str, model_version: int) -> Candidate:
    on_image = instance.os_image == target_key and instance.provisioning_state != ProvisioningState.FAILED
    on_target = on_image if kind in _OS_KINDS else on_image and instance.model_version >= model_version
    return _as_candidate(instance, on_target=on_target)


def _extension_candidate(instance: Instance, versions: dict[str, str]) -> Candidate:
    states = instance.extension_states or {}
    on_target = all(
        (states.get(name) or {}).get("version") == version and (states.get(name) or {}).get("state") == "Succeeded"
        for name, version in versions.items()
    )
    return _as_candidate(instance, on_target=on_target)


def _as_candidate(instance: Instance, *, on_target: bool) -> Candidate:
    return Candidate(
        instance_id=instance.instance_id,
        update_domain=instance.update_domain,
        zone=instance.zone,
        healthy=instance.health_state == "Healthy" and instance.power_state == "running",
        on_target=on_target,
        protected=instance.protected_from_scale_set_actions,
    )


def _extension_upgrade_checked(scale_set: ScaleSet, versions: dict[str, str]) -> dict[str, str]:
    """The versions an extension upgrade would roll back to ({name: current version}), after
    checking that each named extension is in the model and each version is a version."""
    if not versions:
        raise ValidationError({"extensions": "Name at least one extension and the version to upgrade it to."})
    model = {e.name: e for e in scale_set.extensions.all()}
    errors = {}
    for name, version in versions.items():
        if name not in model:
            errors[name] = f"{scale_set.name} has no extension named '{name}'."
            continue
        try:
            parse_version(version)
        except ValidationError as error:
            errors[name] = error.messages[0]
    if errors:
        raise ValidationError({"extensions": [f"{k}: {v}" for k, v in errors.items()]})
    return {name: model[name].effective_version for name in versions}


def _outcome_versions(run: UpgradeRun, instance: Instance) -> tuple[str, str]:
    """What an outcome says the instance went from and to: images, or extension versions."""
    if run.kind != Kind.EXTENSION:
        return instance.os_image, run.target_image
    states = instance.extension_states or {}
    before = ", ".join(f"{n} {(states.get(n) or {}).get('version', '-')}" for n in run.target_extensions)
    after = ", ".join(f"{n} {v}" for n, v in run.target_extensions.items())
    return before, after


def _write_plan(run: UpgradeRun, plan: Plan, scope: list[Instance], now: Any) -> None:
    batches = UpgradeBatch.objects.bulk_create(
        UpgradeBatch(run=run, index=n, update_domain=b.update_domain, zone=b.zone, size=len(b.instance_ids))
        for n, b in enumerate(plan.batches)
    )
    by_number = {i.instance_id: i for i in scope}
    outcomes = []
    for batch, planned in zip(batches, plan.batches, strict=True):
        for number in planned.instance_ids:
            instance = by_number[number]
            before, after = _outcome_versions(run, instance)
            outcomes.append(
                InstanceOutcome(
                    run=run,
                    batch=batch,
                    instance=instance,
                    instance_id_number=number,
                    from_image=before,
                    to_image=after,
                )
            )
    for number, why in plan.skipped.items():
        instance = by_number[number]
        before, after = _outcome_versions(run, instance)
        outcomes.append(
            InstanceOutcome(
                run=run,
                instance=instance,
                instance_id_number=number,
                status=OutcomeStatus.SKIPPED,
                from_image=before,
                to_image=after,
                reason=why,
            )
        )
    InstanceOutcome.objects.bulk_create(outcomes, batch_size=500)
    RunEvent.objects.create(
        run=run,
        at=now,
        to_state=RunStatus.ROLLING_FORWARD,
        message=f"{len(plan.targeted_ids)} instances in {len(plan.batches)} batches; {len(plan.skipped)} skipped",
    )
    events.run_changed(run.pk)


def _enqueue_on_commit(run_id: int) -> None:
    from upgrades.tasks import run_advance_task

    transaction.on_commit(lambda: run_advance_task.delay(run_id))


def _busy(scale_set: ScaleSet) -> str:
    return (
        f"An upgrade is already rolling forward on {scale_set.name}; "
        "wait for it to finish or cancel it before starting another."
    )


def _nothing_to_do(kind: str, scope: list[Instance], skipped: dict[int, str]) -> str:
    if not scope:
        return "No instances to upgrade."
    reasons = sorted(set(skipped.values()))
    if kind == Kind.EXTENSION:
        what = "the extension versions"
    else:
        what = "the target image" if kind in _OS_KINDS else "the latest model"
    return f"Nothing to upgrade: every chosen instance is already on {what} or protected ({', '.join(reasons)})."


def run_cancel(*, scale_set: ScaleSet, actor: AbstractBaseUser | AnonymousUser | None = None) -> UpgradeRun:
    """R-CANCEL-1: start no new batch; the batch in flight finishes; then Cancelled.

    A compare-and-swap on the rolling-forward run: if none rolls forward, 409 with ARM's
    message. Cancelling twice is harmless.
    """
    now = clock.now()
    with transaction.atomic():
        run = UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).first()
        if run is None:
            raise OperationNotAllowed(NO_RUN_TO_CANCEL)
        updated = UpgradeRun.objects.filter(pk=run.pk, status=RunStatus.ROLLING_FORWARD).update(
            cancel_requested=True,
            last_action=LastAction.CANCEL,
            last_action_at=now,
            next_action_at=_cancel_due(run, now),
        )
        if not updated:
            raise OperationNotAllowed(NO_RUN_TO_CANCEL)
        RunEvent.objects.create(
            run=run,
            at=now,
            from_state=run.phase,
            to_state="cancel_requested",
            message=f"by {getattr(actor, 'username', '') or 'an operator'}",
        )
        audit.record(
            "run.cancel",
            f"{run.get_kind_display()} #{run.pk}: asked to stop after the batch in flight",
            scale_set=scale_set,
            run_id=run.pk,
            actor=actor,
        )
        events.run_changed(run.pk)
    _enqueue_on_commit(run.pk)
    run.refresh_from_db()
    return run


def _cancel_due(run: UpgradeRun, now: Any) -> Any:
    """A run pausing or about to start a batch stops now; one mid-batch keeps its schedule."""
    if run.phase in (Phase.PAUSE, Phase.BEFORE_BATCH):
        return now
    return run.next_action_at


@dataclass(frozen=True)
class Start:
    """The arguments an operator action starts its run with: `plan_for` previews them and
    `run_start` runs them, so the preview and the run cannot disagree."""

    kind: str
    instance_ids: list[int] | None = None
    batch_size: int | None = None
    pause_seconds: float | None = None
    all_at_once: bool = False

    def planned(self, scale_set: ScaleSet) -> PlannedRun:
        return plan_for(
            scale_set=scale_set,
            kind=self.kind,
            instance_ids=self.instance_ids,
            batch_size=self.batch_size,
            pause_seconds=self.pause_seconds,
            all_at_once=self.all_at_once,
        )

    def run(self, scale_set: ScaleSet, actor: AbstractBaseUser | AnonymousUser | None) -> UpgradeRun:
        return run_start(
            scale_set=scale_set,
            kind=self.kind,
            actor=actor,
            instance_ids=self.instance_ids,
            batch_size=self.batch_size,
            pause_seconds=self.pause_seconds,
            all_at_once=self.all_at_once,
        )


def manual_upgrade_start(
    *,
    scale_set: ScaleSet,
    instance_ids: Sequence[int | str] | str = "*",
    update_domain: int | None = None,
    fault_domain: int | None = None,
    zone: str | None = None,
) -> Start:
    """The run a manual upgrade starts (R-MAN-1): the chosen instances, one batch, no gates."""
    chosen = _choose(scale_set, instance_ids, update_domain=update_domain, fault_domain=fault_domain, zone=zone)
    return Start(kind=Kind.MANUAL, instance_ids=chosen, all_at_once=True)


def manual_upgrade(
    *,
    scale_set: ScaleSet,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    instance_ids: Sequence[int | str] | str = "*",
    update_domain: int | None = None,
    fault_domain: int | None = None,
    zone: str | None = None,
) -> UpgradeRun:
    """R-MAN-1: bring the chosen instances to the latest model at once — by ids ('*' for
    all), or every instance of an update domain, fault domain or zone."""
    start = manual_upgrade_start(
        scale_set=scale_set,
        instance_ids=instance_ids,
        update_domain=update_domain,
        fault_domain=fault_domain,
        zone=zone,
    )
    return start.run(scale_set, actor)


def rolling_upgrade_start(*, batch_size: int | None = None, pause_seconds: float | None = None) -> Start:
    """The run an operator's own rolling upgrade starts: every instance, under the gates."""
    return Start(kind=Kind.ROLLING_MODEL, batch_size=batch_size, pause_seconds=pause_seconds)


def rolling_upgrade(
    *,
    scale_set: ScaleSet,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    batch_size: int | None = None,
    pause_seconds: float | None = None,
) -> UpgradeRun:
    """The operator's own rolling upgrade to the latest model (vmsseditor): batch size N,
    pause P, under the set's health gates."""
    return rolling_upgrade_start(batch_size=batch_size, pause_seconds=pause_seconds).run(scale_set, actor)


OS_UPGRADE_NOW = Start(kind=Kind.MANUAL_OS)


def os_upgrade_now(*, scale_set: ScaleSet, actor: AbstractBaseUser | AnonymousUser | None = None) -> UpgradeRun:
    """POST osRollingUpgrade: the latest OS image under the rolling policy; a manually
    triggered upgrade never rolls back (R-ROLLBACK-1)."""
    return OS_UPGRADE_NOW.run(scale_set, actor)


def extension_upgrade_now(*, scale_set: ScaleSet, actor: AbstractBaseUser | AnonymousUser | None = None) -> UpgradeRun:
    """POST extensionRollingUpgrade: every extension of the set that opted in to automatic
    upgrades (enableAutomaticUpgrade) and has a newer release of its major version goes to
    the newest, in one run under the rolling policy (R-EXT-1)."""
    wanted: dict[str, str] = {}
    for needs in extension_needs(clock.now(), [scale_set]).values():
        for need in needs:
            for name, version in need.extensions.items():
                if name not in wanted or parse_version(version) > parse_version(wanted[name]):
                    wanted[name] = version
    if not wanted:
        raise NothingToUpgrade(
            f"No extension of {scale_set.name} has a newer version to upgrade to "
            "(only extensions with enableAutomaticUpgrade are upgraded this way)."
        )
    return run_start(scale_set=scale_set, kind=Kind.EXTENSION, actor=actor, extensions=wanted)


def _choose(
    scale_set: ScaleSet,
    instance_ids: Sequence[int | str] | str,
    *,
    update_domain: int | None,
    fault_domain: int | None,
    zone: str | None,
) -> list[int]:
    rows = scale_set.instances.all()
    if update_domain is not None:
        rows = rows.filter(update_domain=update_domain)
        what = f"update domain {update_domain}"
    elif fault_domain is not None:
        rows = rows.filter(fault_domain=fault_domain)
        what = f"fault domain {fault_domain}"
    elif zone is not None:
        rows = rows.filter(zone=zone)
        what = f"zone {zone}"
    else:
        return [i.instance_id for i in instances_select(scale_set, instance_ids)]
    chosen = list(rows.order_by("instance_id").values_list("instance_id", flat=True))
    if not chosen:
        raise ValidationError(f"{scale_set.name} has no instance in {what}.")
    return chosen


def reimage(
    *,
    scale_set: ScaleSet,
    instance_ids: Sequence[int | str] | str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
) -> list[Instance]:
    """R-MAN-2: a new OS disk from the current model's image; data disks kept. Refused while
    a run rolls forward on the set (it would race the run's own changes)."""
    if UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).exists():
        raise ScaleSetBusy(_busy(scale_set))
    target = target_image(scale_set)
    if target is None:
        raise ValidationError("No version of the set's image is available in its region.")
    instances = instances_select(scale_set, instance_ids)
    with transaction.atomic():
        driver_for(scale_set).reimage(instances, target, operation=f"reimage-{uuid.uuid4().hex}")
        audit.record(
            "instances.reimage",
            f"Reimaged {instances_named(instances)} to {target.label}",
            scale_set=scale_set,
            actor=actor,
            details={"instance_ids": [instance.instance_id for instance in instances]},
        )
    return instances


MODEL_FIELDS = {"image_publisher", "image_offer", "image_sku", "image_version", "custom_image_uri", "vm_size"}


def model_change_checked(
    *, scale_set: ScaleSet, changes: dict[str, Any], extensions_changed: bool = False
) -> tuple[ScaleSet, dict[str, Any]]:
    """Check a model change (R-MODE-1) without saving it: a fresh copy of the set with the
    changes applied, and the changes that differ. Refuses what update_model refuses: unknown
    fields, nothing changed, a run rolling forward in Rolling or Automatic mode, an image not
    in the region, a model that leaves R-AUTO-1 while automatic OS upgrades are on."""
    unknown = set(changes) - MODEL_FIELDS
    if unknown:
        raise ValidationError({name: "This field cannot be changed here." for name in sorted(unknown)})
    # Work on a fresh copy: a refused change must leave the caller's object as it was.
    scale_set = ScaleSet.objects.select_related("region").get(pk=scale_set.pk)
    changed = {k: v for k, v in changes.items() if getattr(scale_set, k) != v}
    if not changed and not extensions_changed:
        raise ValidationError("Nothing changed in the model.")
    if scale_set.upgrade_mode != UpgradeMode.MANUAL and scale_set_busy(scale_set):
        raise OperationNotAllowed(_busy(scale_set) + " A model change would start a new one.")
    for name, value in changed.items():
        setattr(scale_set, name, value)
    scale_set.full_clean()
    if missing := pinned_version_missing(scale_set):
        raise ValidationError({"image_version": missing})
    if target_image(scale_set) is None:
        raise ValidationError({"image_version": f"No version of this image is available in {scale_set.region.name}."})
    if scale_set.enable_automatic_os_upgrade:
        # The model must keep meeting R-AUTO-1 while automatic upgrades are on (no pinned
        # version, a supported SKU, no custom image): turn them off first to leave it.
        validate_automatic_os_upgrade(scale_set, list(scale_set.extensions.all()))
    return scale_set, changed


def model_change_start(scale_set: ScaleSet) -> Start | None:
    """The run a model change starts by upgrade mode (R-MODE-1): Automatic, every instance
    at once; Rolling, a rolling model upgrade; Manual, none."""
    if scale_set.upgrade_mode == UpgradeMode.AUTOMATIC:
        return Start(kind=Kind.MANUAL, all_at_once=True)
    if scale_set.upgrade_mode == UpgradeMode.ROLLING:
        return Start(kind=Kind.ROLLING_MODEL)
    return None


def model_change_planned(*, scale_set: ScaleSet, changes: dict[str, Any]) -> PlannedRun | None:
    """The run a model change would start, planned on the changed model (not saved: the
    model version is raised on an unsaved copy), or None in Manual mode."""
    changed_set, _ = model_change_checked(scale_set=scale_set, changes=changes)
    start = model_change_start(changed_set)
    if start is None:
        return None
    changed_set.model_version += 1
    return start.planned(changed_set)


def update_model(
    *,
    scale_set: ScaleSet,
    changes: dict[str, Any],
    actor: AbstractBaseUser | AnonymousUser | None = None,
    extensions_changed: bool = False,
    audited: bool = True,
) -> UpgradeRun | None:
    """R-MODE-1: change the model, raise its version, then act by upgrade mode: Automatic
    upgrades every instance at once, Rolling starts a rolling model upgrade, Manual waits for
    an operator. Returns the run started, if any. `extensions_changed`: the caller already
    changed the extension profile in this transaction (scale_set_update), which is a model
    change too; `audited=False`: the caller records the change itself."""
    callers = scale_set
    scale_set, changed = model_change_checked(
        scale_set=scale_set, changes=changes, extensions_changed=extensions_changed
    )
    run = None
    with transaction.atomic():
        scale_set.model_version += 1
        scale_set.save()
        if audited:
            audit.record(
                "scale_set.model",
                f"Changed the model (version {scale_set.model_version}): {_named_changes(changes, extensions_changed)}",
                scale_set=scale_set,
                actor=actor,
                details={"changes": {name: str(value) for name, value in changes.items()}},
            )
        fleet_events.scale_set_changed(scale_set.pk)
        start = model_change_start(scale_set)
        if start is not None:
            run = start.run(scale_set, actor)
    # An accepted change is copied back onto the caller's object.
    for name in [*changed, "model_version"]:
        setattr(callers, name, getattr(scale_set, name))
    return run


def _named_changes(changes: dict[str, Any], extensions_changed: bool) -> str:
    named = [f"{name} {value}" for name, value in sorted(changes.items())]
    if extensions_changed:
        named.append("extensions")
    return ", ".join(named) or "no property"


def automatic_os_upgrade_set(
    *,
    scale_set: ScaleSet,
    enabled: bool,
    disable_automatic_rollback: bool | None = None,
    actor: AbstractBaseUser | AnonymousUser | None = None,
) -> ScaleSet:
    """Turn automatic OS image upgrades on or off (enableAutomaticOSUpgrade).

    Enabling is refused unless every R-AUTO-1 condition holds (a ValidationError on
    enable_automatic_os_upgrade listing each problem; nothing is saved). Disabling always
    succeeds (R-AUTO-5): it stops future automatic runs; a run in progress goes on until
    cancelled. `disable_automatic_rollback` is saved when given. This is upgrade policy, not
    the VM model: the model version does not change. Returns the saved set.
    """
    with transaction.atomic():
        fresh = ScaleSet.objects.select_for_update().select_related("region").get(pk=scale_set.pk)
        if enabled:
            validate_automatic_os_upgrade(fresh, list(fresh.extensions.all()))
        fields = ["enable_automatic_os_upgrade"]
        if enabled and not fresh.enable_automatic_os_upgrade:
            # The first automatic rollout after enabling may wait longer (R-AUTO-2).
            fresh.automatic_os_upgrade_enabled_at = clock.now()
            fields.append("automatic_os_upgrade_enabled_at")
        fresh.enable_automatic_os_upgrade = enabled
        if disable_automatic_rollback is not None:
            fresh.disable_automatic_rollback = disable_automatic_rollback
            fields.append("disable_automatic_rollback")
        fresh.save(update_fields=fields)
        audit.record(
            "scale_set.automatic_os_upgrade",
            f"Turned automatic OS upgrades {'on' if enabled else 'off'}"
            + (
                f", automatic rollback {'off' if disable_automatic_rollback else 'on'}"
                if disable_automatic_rollback is not None
                else ""
            ),
            scale_set=fresh,
            actor=actor,
        )
        fleet_events.scale_set_changed(fresh.pk)
    for name in fields:
        setattr(scale_set, name, getattr(fresh, name))
    return fresh


# --- PUT and PATCH of a whole scale set (the API) --------------------------------------------------

# Upgrade policy, health probe and OS settings: saved as they are, no new model version
# (changing how upgrades happen does not change what instances run).
SETTINGS_FIELDS = {
    "upgrade_mode",
    "max_batch_instance_percent",
    "max_unhealthy_instance_percent",
    "max_unhealthy_upgraded_instance_percent",
    "pause_time_between_batches",
    "enable_cross_zone_upgrade",
    "prioritize_unhealthy_instances",
    "rollback_failed_instances_on_policy_breach",
    "max_surge",
    "enable_automatic_os_upgrade",
    "disable_automatic_rollback",
    "use_rolling_upgrade_policy",
    "os_rolling_upgrade_deferral",
    "health_probe_protocol",
    "health_probe_port",
    "health_probe_path",
    "health_probe_interval_seconds",
    "enable_automatic_updates",
    "single_placement_group",
}
# Extension properties that say how an extension is upgraded, not what is installed.
EXTENSION_SETTINGS_FIELDS = {"enable_automatic_upgrade", "auto_upgrade_minor_version"}
EXTENSION_MODEL_FIELDS = {"publisher", "type", "type_handler_version", "provision_after_extensions", "settings"}


def scale_set_update(
    *,
    scale_set: ScaleSet,
    settings: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    extensions: list[dict[str, Any]] | None = None,
    capacity: int | None = None,
    actor: AbstractBaseUser | AnonymousUser | None = None,
) -> UpgradeRun | None:
    """Apply an update of the whole set (ARM PUT or PATCH) all or nothing, in one transaction:

    1. settings (upgrade policy, health probe, OS settings): saved, no new model version;
    2. capacity: scale out on the current model, or in (the newest instances; refused while
       a run rolls forward, it may be upgrading them);
    3. extensions (the complete new list, when given): enableAutomaticUpgrade and
       autoUpgradeMinorVersion are settings; anything else added, removed or changed is a
       model change;
    4. the model (image, VM size) and extension changes: one new model version, acted on by
       the (new) upgrade mode (update_model, R-MODE-1).
    Then the whole is checked (one health source, R-H-1; R-AUTO-1 while automatic OS
    upgrades are on) before the run, if any, starts. Any refusal leaves everything as it was.
    """
    with transaction.atomic():
        fresh = ScaleSet.objects.select_for_update().select_related("region").get(pk=scale_set.pk)
        # A PUT (and the CLI's generic update) sends every property back: the audit names only
        # those whose value changed.
        settings_before = {name: getattr(fresh, name, None) for name in settings or {}}
        capacity_before = fresh.capacity
        extensions_before = _extension_settings(fresh.extensions.all())
        if settings:
            _settings_apply(fresh, settings)
        if capacity is not None and capacity != fresh.capacity:
            _capacity_set(fresh, capacity)
        extensions_changed = extensions is not None and _extensions_replace(fresh, extensions)
        rows = list(fresh.extensions.all())
        validate_health_sources(fresh, rows)
        if fresh.enable_automatic_os_upgrade:
            validate_automatic_os_upgrade(fresh, rows)
        changes = {name: value for name, value in (model or {}).items() if getattr(fresh, name) != value}
        run = None
        if changes or extensions_changed:
            run = update_model(
                scale_set=fresh, changes=changes, actor=actor, extensions_changed=extensions_changed, audited=False
            )
        settings_changed = {
            name: f"{before} → {getattr(fresh, name)}"
            for name, before in settings_before.items()
            if getattr(fresh, name) != before
        }
        changed = [f"{name} {change}" for name, change in sorted(settings_changed.items())]
        changed += [f"{name} → {value}" for name, value in sorted(changes.items())]
        if fresh.capacity != capacity_before:
            changed.append(f"capacity {capacity_before} → {fresh.capacity}")
        if extensions_changed or _extension_settings(rows) != extensions_before:
            changed.append("extensions")
        if changed:
            audit.record(
                "scale_set.update",
                f"Changed {'; '.join(changed)}"
                + (f" (model version {fresh.model_version})" if changes or extensions_changed else ""),
                scale_set=fresh,
                actor=actor,
                details={
                    "settings": settings_changed,
                    "model": {name: str(value) for name, value in changes.items()},
                    "capacity": f"{capacity_before} → {fresh.capacity}" if fresh.capacity != capacity_before else None,
                    "extensions_changed": extensions_changed,
                },
            )
        fleet_events.scale_set_changed(fresh.pk)
    return run


def _settings_apply(scale_set: ScaleSet, settings: dict[str, Any]) -> None:
    unknown = set(settings) - SETTINGS_FIELDS
    if unknown:
        raise ValidationError({name: "This field cannot be changed here." for name in sorted(unknown)})
    turning_on = settings.get("enable_automatic_os_upgrade") is True and not scale_set.enable_automatic_os_upgrade
    for name, value in settings.items():
        setattr(scale_set, name, value)
    if turning_on:
        # The first automatic rollout after enabling may wait longer (R-AUTO-2).
        scale_set.automatic_os_upgrade_enabled_at = clock.now()
    scale_set.full_clean()
    scale_set.save()


def _capacity_set(scale_set: ScaleSet, capacity: int) -> None:
    current = scale_set.capacity
    scale_set.capacity = capacity
    scale_set.full_clean()  # the placement-group limits
    if capacity < current:
        if UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).exists():
            raise ScaleSetBusy(_busy(scale_set) + " Scaling in would remove instances it may be upgrading.")
        instances_remove(scale_set, current - capacity)
    else:
        instances_add(scale_set, capacity - current)
    scale_set.save(update_fields=["capacity"])


def _extension_settings(extensions: Iterable[ScaleSetExtension]) -> list[tuple[Any, ...]]:
    """What of the extension profile an update may change, to tell whether it did."""
    return sorted(
        (ext.name, ext.type_handler_version, ext.enable_automatic_upgrade, ext.auto_upgrade_minor_version)
        for ext in extensions
    )


def _extensions_replace(scale_set: ScaleSet, specs: list[dict[str, Any]]) -> bool:
    """Make the set's extensions those of `specs` (ScaleSetExtension field values); returns
    whether the model changed. protected_settings left out keep their value: they are never
    read back, so a client sending back what it read must not erase them."""
    current = {ext.name: ext for ext in scale_set.extensions.all()}
    names = [spec["name"] for spec in specs]
    if len(set(names)) != len(names):
        raise ValidationError({"extensions": "Two extensions have the same name."})
    model_changed = bool(set(current) - set(names))
    for spec in specs:
        ext = current.get(spec["name"]) or ScaleSetExtension(scale_set=scale_set, name=spec["name"])
        if ext.pk is None:
            model_changed = True
        for field, value in spec.items():
            if field in EXTENSION_MODEL_FIELDS | {"protected_settings"} and getattr(ext, field) != value:
                model_changed = True
            if field == "type_handler_version" and value != ext.type_handler_version:
                ext.auto_upgraded_version = ""  # the model names a version again
            setattr(ext, field, value)
        try:
            ext.full_clean(exclude=["scale_set"])
        except ValidationError as error:
            raise ValidationError({"extensions": [f"Extension {ext.name}: {m}" for m in error.messages]}) from None
        ext.save()
    ScaleSetExtension.objects.filter(scale_set=scale_set).exclude(name__in=names).delete()
    missing = [name for spec in specs for name in spec.get("provision_after_extensions", []) if name not in names]
    if missing:
        raise ValidationError({"provision_after_extensions": f"No extension named {', '.join(sorted(missing))}."})
    return model_changed


def scale_set_delete(*, scale_set: ScaleSet) -> None:
    """Delete a set with its instances, disks and history. Refused while a run rolls
    forward: cancel it first (an operator deleting a set mid-upgrade has most likely picked
    the wrong one)."""
    with transaction.atomic():
        if UpgradeRun.objects.filter(scale_set=scale_set, status=RunStatus.ROLLING_FORWARD).exists():
            raise ScaleSetBusy(_busy(scale_set) + " Cancel it before deleting the set.")
        pk = scale_set.pk
        audit.record("scale_set.delete", "Deleted the scale set", scale_set_name=scale_set.name)
        scale_set.delete()
        fleet_events.scale_set_changed(pk)
